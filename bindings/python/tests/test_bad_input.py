"""Bad input: a tampered artifact, a directive for an unknown site, a daemon
that goes away mid-run. Each raises a clear KasminaError, and the model is
left with the host output — no half-attached seed."""

import pytest
import torch

import kasmina
from conftest import germinate
from kasmina.torch import Grafter
from scenario import SITE, batch, build, run_until, train_step

SLOTS = {"seed-a": SITE, "seed-b": SITE}


def _setup(daemon, run):
    model, optimizer = build()
    host_fc1 = model.fc1
    grafter = Grafter.connect(daemon.socket, run)
    grafter.register(model, sites={SITE: "fc1"}, slots=SLOTS, example_input=batch(0)[0][:2])
    grafter.bind(optimizer)
    return model, optimizer, grafter, host_fc1


def _host_output(model, host_fc1, x):
    return model.fc2(host_fc1(x))


def test_tampered_artifact_is_refused_and_nothing_is_grafted(daemon):
    model, optimizer, grafter, host_fc1 = _setup(daemon, "py-tamper")
    genuine = grafter.client.fetch_kernel("mlp_adapter_64")
    data = bytearray(genuine.bytes)
    data[len(data) // 2] ^= 0xFF
    tampered = kasmina.KernelArtifact(genuine.blueprint_id, genuine.sha256, bytes(data), genuine.descriptor)
    groups = len(optimizer.param_groups)
    with pytest.raises(kasmina.GraftError) as err:
        grafter.attach_artifact("seed-a", SITE, genuine.sha256, kasmina.BlendSpec.convex(), tampered)
    assert err.value.code == "digest_mismatch" and err.value.seed_id == "seed-a"
    assert genuine.sha256 in err.value.message and "not grafted" in err.value.message
    assert len(model.fc1.seeds) == 0 and grafter.seeds() == {}
    assert len(optimizer.param_groups) == groups
    x = batch(1)[0]
    assert torch.equal(model(x), _host_output(model, host_fc1, x))
    # The genuine bytes graft (the check refuses the tampering, not the kernel).
    grafter.attach_artifact("seed-a", SITE, genuine.sha256, kasmina.BlendSpec.convex(), genuine)
    assert "seed-a" in model.fc1.seeds


def test_attach_whose_digest_is_not_the_served_artifacts_is_refused(daemon, hmac_key):
    """A directive naming other bytes than the daemon serves (what a tampered
    artifact in transit looks like from the trainer): refused, others applied."""
    model, optimizer, grafter, host_fc1 = _setup(daemon, "py-digest")
    wrong = kasmina.GraftDirective.Attach(
        seed_id="seed-a",
        site=SITE,
        blueprint_id="mlp_adapter_64",
        artifact_sha256="0" * 64,
        blend=kasmina.BlendSpec.convex(),
    )
    good = grafter.client.fetch_kernel("unstable_64")
    also = kasmina.GraftDirective.Attach(
        seed_id="seed-b",
        site=SITE,
        blueprint_id="unstable_64",
        artifact_sha256=good.sha256,
        blend=kasmina.BlendSpec.convex(),
    )
    with pytest.raises(kasmina.GraftError) as err:
        grafter.apply_directives([wrong, also])
    assert err.value.code == "digest_mismatch"
    assert [e.kind for e in err.value.events] == ["refused", "attached"], "the other directive was still applied"
    assert set(grafter.seeds()) == {"seed-b"} and "seed-a" not in model.fc1.seeds


def test_directive_for_an_unknown_site_raises_and_leaves_the_host_output(daemon):
    model, optimizer, grafter, host_fc1 = _setup(daemon, "py-site")
    sha = grafter.client.fetch_kernel("mlp_adapter_64").sha256
    for site, seed, code in (("no-such-site", "seed-a", "unknown_site"), (SITE, "seed-z", "unknown_slot")):
        d = kasmina.GraftDirective.Attach(
            seed_id=seed,
            site=site,
            blueprint_id="mlp_adapter_64",
            artifact_sha256=sha,
            blend=kasmina.BlendSpec.convex(),
        )
        with pytest.raises(kasmina.GraftError) as err:
            grafter.apply_directives([d])
        assert err.value.code == code and site in err.value.message
    stage = kasmina.GraftDirective.Stage(seed_id="seed-a", stage=kasmina.SeedStage.TRAINING, alpha=0.0)
    with pytest.raises(kasmina.GraftError) as err:
        grafter.apply_directives([stage])
    assert err.value.code == "unknown_seed"
    assert len(model.fc1.seeds) == 0
    x = batch(2)[0]
    assert torch.equal(model(x), _host_output(model, host_fc1, x))


def test_daemon_going_away_mid_run(daemon, hmac_key):
    model, optimizer, grafter, host_fc1 = _setup(daemon, "py-gone")
    controller = daemon.client("controller")
    assert germinate(
        controller, hmac_key, "py-gone", "seed-a", "mlp_adapter_64", SITE, {"blend_mode": "RESIDUAL"}
    ).accepted
    run_until(model, optimizer, grafter, 1, 6)
    assert grafter.seed_stage("seed-a") == kasmina.SeedStage.BLENDING
    x = batch(7)[0]
    assert not torch.equal(model(x), _host_output(model, host_fc1, x)), "the blending seed is in the output"
    daemon.kill()
    groups = len(optimizer.param_groups)
    with pytest.raises(kasmina.TransportError) as err:
        train_step(model, optimizer, grafter, 7)
    assert err.value.code == "transport"
    # Without a control plane there are no gates: the seed is swapped out
    # (kept whole, not half-attached, so a reconnect can declare it held).
    view = grafter.seeds()["seed-a"]
    assert view.suspended and view.stage == kasmina.SeedStage.BLENDING
    assert torch.equal(model(x), _host_output(model, host_fc1, x))
    assert len(optimizer.param_groups) == groups
    with pytest.raises(kasmina.TransportError, match="control plane was lost"):
        grafter.step(8, 0.1)


def test_reconnect_after_the_daemon_restarts_adopts_the_held_seed(daemon, hmac_key):
    """The daemon is SIGKILLed mid-blend and restarted on its journal; the
    grafter reconnects declaring the seed it holds, the control plane adopts
    it (same kernel digest), and blending resumes with the same weights."""
    model, optimizer, grafter, host_fc1 = _setup(daemon, "py-restart")
    controller = daemon.client("controller")
    assert germinate(
        controller, hmac_key, "py-restart", "seed-a", "mlp_adapter_64", SITE, {"blend_mode": "CONVEX"}
    ).accepted
    run_until(model, optimizer, grafter, 1, 6)
    assert grafter.seed_stage("seed-a") == kasmina.SeedStage.BLENDING
    daemon.kill()
    with pytest.raises(kasmina.TransportError):
        train_step(model, optimizer, grafter, 7)
    # Training goes on without a control plane: the suspended seed neither
    # runs nor learns.
    weights = {k: v.clone() for k, v in model.fc1.seeds["seed-a"].state_dict().items()}
    train_step(model, optimizer, None, 8)
    for k, v in model.fc1.seeds["seed-a"].state_dict().items():
        assert torch.equal(v, weights[k]), "a suspended seed keeps its weights"
    daemon.start()
    grafter.reconnect(daemon.socket)
    assert not grafter.seeds()["seed-a"].suspended
    results = run_until(model, optimizer, grafter, 8, 13)
    kinds = [e.kind for r in results for e in r.events]
    assert "attached" not in kinds, "the held seed was adopted, not attached afresh"
    states = {s.seed_id: s for s in daemon.client("observer").seed_states()}
    running = (kasmina.SeedStage.BLENDING, kasmina.SeedStage.SHADOWING, kasmina.SeedStage.PROBATIONARY)
    assert states["seed-a"].stage in running, states["seed-a"]
    assert grafter.seed_stage("seed-a") == states["seed-a"].stage
    x = batch(14)[0]
    assert not torch.equal(model(x), _host_output(model, host_fc1, x)), "the seed is back in the output"


def test_misuse_is_refused_loudly(daemon):
    model, optimizer = build()
    grafter = Grafter.connect(daemon.socket, "py-misuse")
    with pytest.raises(kasmina.ConfigError, match="no submodule"):
        grafter.register(model, sites={SITE: "nope"}, slots={}, example_input=batch(0)[0][:2])
    with pytest.raises(kasmina.ConfigError, match="not in sites"):
        grafter.register(model, sites={SITE: "fc1"}, slots={"seed-a": "other"}, example_input=batch(0)[0][:2])
    with pytest.raises(kasmina.ConfigError, match="register"):
        grafter.step(1, 0.5)
    grafter.register(model, sites={SITE: "fc1"}, slots=SLOTS, example_input=batch(0)[0][:2])
    grafter.step(1, 0.5)
    with pytest.raises(kasmina.StepOrderError):
        grafter.step(1, 0.5)
    with pytest.raises(kasmina.ConfigError):
        Grafter.connect(daemon.socket, " ")
