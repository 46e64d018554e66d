"""A PyTorch trainer against the real ``kasmina serve``: one seed grows,
blends (α from the directives), shadows, passes probation and fossilizes;
an unstable one is culled by G2 for non-finite outputs; seed parameters
join and leave the optimizer; the model keeps the host's exact output where
the stage table says so; and the grafter resumes from its state_dict."""

import torch
from torch import nn

import kasmina
from conftest import fossilize, germinate
from kasmina.torch import Grafter, SeedSite
from scenario import SITE, batch, build, run_until, stages, train_step

RUN = "py-lifecycle"
SLOTS = {"seed-a": SITE, "seed-b": SITE}


def _register(daemon, model, run=RUN, **kw):
    grafter = Grafter.connect(daemon.socket, run)
    grafter.register(model, sites={SITE: "fc1"}, slots=SLOTS, example_input=batch(0)[0][:2], **kw)
    return grafter


def test_register_wraps_the_site_like_an_adapter_library(daemon):
    model, _ = build()
    original = model.fc1
    grafter = _register(daemon, model)
    assert isinstance(model.fc1, SeedSite)
    assert model.fc1.base_layer is original
    assert isinstance(model.fc1.seeds, nn.ModuleDict) and len(model.fc1.seeds) == 0
    x = batch(1)[0]
    assert torch.equal(model(x), model.fc2(original(x)))
    assert grafter.settings.isolation.samples_per_param >= 1
    states = {s.seed_id: s for s in daemon.client("observer").seed_states()}
    assert set(states) == {"seed-a", "seed-b"} and states["seed-a"].site == SITE
    assert states["seed-a"].stage == kasmina.SeedStage.DORMANT


def test_grow_blend_fossilize_and_cull(daemon, hmac_key):
    model, optimizer = build()
    grafter = _register(daemon, model)
    grafter.bind(optimizer)
    controller = daemon.client("controller")
    host_groups = len(optimizer.param_groups)
    seen = {"alphas": [], "daemon_alphas": [], "events": [], "incubator_checked": False, "fossilize_sent": False}

    def before(step):
        if step == 1:
            out = germinate(controller, hmac_key, RUN, "seed-a", "mlp_adapter_64", SITE, {"blend_mode": "RESIDUAL"})
            assert out.accepted, out
        if step == 2:
            assert germinate(controller, hmac_key, RUN, "seed-b", "unstable_64", SITE).accepted
        st = {s.seed_id: s for s in controller.seed_states()}
        a = st["seed-a"]
        if not seen["fossilize_sent"] and a.stage == kasmina.SeedStage.PROBATIONARY and a.epoch >= 2:
            fossilize(controller, hmac_key, RUN, "seed-a", "mlp_adapter_64", SITE).raise_for_rejection()
            seen["fossilize_sent"] = True
        view = grafter.seeds().get("seed-a")
        if view is not None and view.stage == kasmina.SeedStage.BLENDING:
            seen["alphas"].append(view.alpha)
            seen["daemon_alphas"].append(a.alpha)
        if view is not None and view.stage == kasmina.SeedStage.TRAINING and not seen["incubator_checked"]:
            # Incubator: the forward value is the host's exactly.
            x = batch(step)[0]
            with grafter.host_only():
                host = model(x)
            assert torch.equal(model(x), host)
            seen["incubator_checked"] = True

    results = run_until(model, optimizer, grafter, 1, 30, before)
    events = [(e.kind, e.seed_id, e.detail) for r in results for e in r.events]

    # seed-a walked the whole lifecycle, in order, driven by directives.
    walked = [d for k, s, d in events if k == "stage_changed" and s == "seed-a"]
    assert walked == ["TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"], events
    assert seen["incubator_checked"]
    # α came from the control plane's ramp: rising from 0 to 1, as the daemon says.
    alphas = seen["alphas"]
    assert alphas == seen["daemon_alphas"] and len(alphas) >= 3
    assert alphas == sorted(alphas) and alphas[0] < 0.5 < alphas[-1] <= 1.0
    assert grafter.seed_stage("seed-a") == kasmina.SeedStage.FOSSILIZED
    assert grafter.fossilized_parameters() == 8320
    assert any(k.startswith("fc1.seeds.seed-a.") for k in model.state_dict())

    # seed-b: non-finite outputs, culled at G2, removed from model and optimizer.
    assert ("detached", "seed-b") in [(k, s) for k, s, _ in events]
    assert "seed-b" not in model.fc1.seeds and "seed-b" not in grafter.seeds()
    states = {s.seed_id: s for s in controller.seed_states()}
    assert states["seed-a"].stage == kasmina.SeedStage.FOSSILIZED
    assert states["seed-b"].stage in (kasmina.SeedStage.CULLED, kasmina.SeedStage.EMBARGOED)
    verdicts = [
        (e.attr_text("gate"), e.attr_text("passed"), e.attr_text("reason"))
        for e in grafter.client.drain_telemetry()
        if e.name == "kasmina.gate.verdict" and e.seed_id == "seed-b"
    ]
    assert ("G2", "false", "non_finite_outputs") in verdicts, verdicts

    # The optimizer: seed-a's group joined at TRAINING and stays; seed-b's left.
    seed_groups = [g["kasmina_seed"] for g in optimizer.param_groups if "kasmina_seed" in g]
    assert seed_groups == ["seed-a"] and len(optimizer.param_groups) == host_groups + 1
    seed_params = {id(p) for p in model.fc1.seeds["seed-a"].parameters()}
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == seed_params

    # A fossil is part of the host: gradients flow through it both ways.
    x, y = batch(99)
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.fc1.base_layer.weight.grad is not None
    assert all(p.grad is not None for p in model.fc1.seeds["seed-a"].parameters())
    with grafter.host_only():
        host = model(x)
    assert not torch.equal(model(x), host), "the fossil changes the model's output"


def test_seed_blend_statistics_reach_the_control_plane(daemon, hmac_key):
    model, optimizer = build()
    grafter = _register(daemon, model, run="py-stats")
    grafter.bind(optimizer)
    controller = daemon.client("controller")
    alpha_vec = "[" + ",".join("1.0" if i % 2 == 0 else "0.0" for i in range(64)) + "]"
    assert germinate(
        controller,
        hmac_key,
        "py-stats",
        "seed-a",
        "mlp_adapter_64",
        SITE,
        {"blend_mode": "CHANNEL", "alpha_vec": alpha_vec},
    ).accepted
    blends = []
    for step in range(1, 12):
        train_step(model, optimizer, grafter, step)
        a = {s.seed_id: s for s in controller.seed_states()}["seed-a"]
        if a.stage == kasmina.SeedStage.BLENDING and a.blend is not None:
            blends.append(a.blend)
    assert len(blends) >= 2, "no blend statistics were reported while blending"
    for b in blends:
        assert b.mode == kasmina.BlendMode.CHANNEL
        # α_eff = α·α_vec: at α = 0 every channel is 0, after that the half with α_vec = 0.
        assert b.sparsity == (1.0 if b.alpha_mean == 0.0 else 0.5), b
        assert b.gate_mean is None and b.clamped_fraction == 0.0
        assert 0.0 <= b.alpha_mean <= 0.5 and abs(b.alpha_p95 - 2 * b.alpha_mean) < 1e-12
        assert b.kernel_us > 0.0
    assert blends[-1].alpha_mean > blends[0].alpha_mean, "the ramp advanced"


def test_state_dict_resumes_where_it_left_off(make_daemon, hmac_key):
    """Run A trains 14 steps in one go; run B trains 7, saves, is rebuilt from
    scratch (new model, optimizer, grafter, connection) and trains 7 more.
    Same weights, same stages at the end."""
    finals = []
    for split in (None, 7):
        d = make_daemon()
        model, optimizer = build()
        grafter = _register(d, model, run="py-resume")
        grafter.bind(optimizer)
        controller = d.client("controller")
        assert germinate(
            controller, hmac_key, "py-resume", "seed-a", "mlp_adapter_64", SITE, {"blend_mode": "CONVEX"}
        ).accepted
        if split is None:
            run_until(model, optimizer, grafter, 1, 14)
        else:
            run_until(model, optimizer, grafter, 1, split)
            saved = {"grafter": grafter.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            saved = {k: _clone(v) for k, v in saved.items()}
            grafter.close()
            model, optimizer = build(seed=123)  # different init: everything must come from the checkpoint
            grafter = Grafter.connect(d.socket, "py-resume")
            grafter.register(
                model, sites={SITE: "fc1"}, slots=SLOTS, example_input=batch(0)[0][:2], state_dict=saved["grafter"]
            )
            model.load_state_dict(saved["model"])
            optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if ".seeds." not in n], lr=1e-2)
            grafter.bind(optimizer)
            optimizer.load_state_dict(saved["optimizer"])
            assert grafter.last_step == split
            run_until(model, optimizer, grafter, split + 1, 14)
        finals.append(
            (stages(grafter), {k: v.clone() for k, v in model.state_dict().items()}, controller.seed_states())
        )
    (stages_a, weights_a, daemon_a), (stages_b, weights_b, daemon_b) = finals
    assert stages_a == stages_b and stages_a["seed-a"] in ("SHADOWING", "PROBATIONARY", "BLENDING")
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert torch.allclose(weights_a[k], weights_b[k], atol=1e-6), k
    assert [(s.seed_id, s.stage, s.alpha) for s in daemon_a] == [(s.seed_id, s.stage, s.alpha) for s in daemon_b]


def _clone(obj):
    import copy

    return copy.deepcopy(obj)


def test_rollback_restores_the_culled_seed_through_the_checkpoint_protocol(daemon, hmac_key):
    """The control plane records a rollback point when G2 culls seed-b and asks
    for the weights (Checkpoint before the Detach); a ROLLBACK command brings
    RestoreCheckpoint, and the grafter puts seed-b back as it was captured."""
    model, optimizer = build()
    grafter = _register(daemon, model, run="py-rollback")
    grafter.bind(optimizer)
    controller = daemon.client("controller")
    assert germinate(controller, hmac_key, "py-rollback", "seed-b", "unstable_64", SITE).accepted
    captured_weights = None
    culled_at = None
    for step in range(1, 12):
        before = (
            {k: v.clone() for k, v in model.fc1.seeds["seed-b"].state_dict().items()}
            if "seed-b" in model.fc1.seeds
            else None
        )
        kinds = [e.kind for e in train_step(model, optimizer, grafter, step).events]
        if "detached" in kinds:
            assert kinds.index("checkpoint_captured") < kinds.index("detached"), kinds
            captured_weights, culled_at = before, step
            break
    assert culled_at is not None and "seed-b" not in model.fc1.seeds
    # The capture is confirmed by the next step report; only then is the point ready.
    train_step(model, optimizer, grafter, culled_at + 1)
    outcome = controller.submit_command(
        kasmina.Command.rollback("seed-b", "pytest: back to before the cull")
        .annotation("training_run_id", "py-rollback")
        .sign(hmac_key)
    )
    assert outcome.accepted, outcome
    result = train_step(model, optimizer, grafter, culled_at + 2)
    assert [type(d).__name__ for d in result.directives] == ["RestoreCheckpoint"]
    assert [e.kind for e in result.events] == ["checkpoint_restored"]
    assert grafter.seed_stage("seed-b") == kasmina.SeedStage.TRAINING
    for k, v in model.fc1.seeds["seed-b"].state_dict().items():
        assert torch.equal(v, captured_weights[k]), k
    assert [g["kasmina_seed"] for g in optimizer.param_groups if "kasmina_seed" in g] == ["seed-b"]
    # The control plane restores its half when the next report confirms the restore.
    grafter.client.drain_telemetry()
    train_step(model, optimizer, grafter, culled_at + 3)
    rolled_back = [
        (e.seed_id, e.attr_text("to")) for e in grafter.client.drain_telemetry() if e.name == "kasmina.seed.rolled_back"
    ]
    assert rolled_back == [("seed-b", "TRAINING")], rolled_back


def test_durable_checkpoints_round_trip_and_are_bounded(daemon, hmac_key, tmp_path):
    model, optimizer = build()
    grafter = Grafter.connect(daemon.socket, "py-ckpt", checkpoint_dir=tmp_path / "ckpt", max_checkpoints=1)
    grafter.register(model, sites={SITE: "fc1"}, slots=SLOTS, example_input=batch(0)[0][:2])
    grafter.bind(optimizer)
    assert germinate(daemon.client("controller"), hmac_key, "py-ckpt", "seed-a", "mlp_adapter_64", SITE).accepted
    run_until(model, optimizer, grafter, 1, 4)
    assert grafter.seed_stage("seed-a") is not None
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    events = grafter.apply_directives([kasmina.GraftDirective.Checkpoint(point_id="p/1", durable=True)])
    assert [e.kind for e in events] == ["checkpoint_captured"]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["p_1.kasmina-ckpt"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert (
        grafter.apply_directives([kasmina.GraftDirective.RestoreCheckpoint(point_id="p/1")])[0].kind
        == "checkpoint_restored"
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    # Unknown point: reported as failed, nothing changed.
    assert (
        grafter.apply_directives([kasmina.GraftDirective.RestoreCheckpoint(point_id="nope")])[0].kind
        == "checkpoint_failed"
    )
    # Retention: a second capture evicts the first (file removed, eviction reported).
    grafter.apply_directives([kasmina.GraftDirective.Checkpoint(point_id="p2", durable=True)])
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["p2.kasmina-ckpt"]
    pending = grafter._checkpoint_events  # what the next step report carries
    assert [type(e).__name__ for e in pending] == ["Captured", "Restored", "Failed", "Captured", "Evicted"]
    assert pending[-1].point_id == "p/1"
