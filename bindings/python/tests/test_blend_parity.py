"""Parity with the Rust tensor plane (SPEC §5): the Python slot, run through
the same stages with the same seed weights and inputs, reproduces the
outputs, gradients and blend statistics the Rust kernels wrote to
``fixtures/golden_blends.json`` (``cargo run -p kasmina-tensor --example
golden_blends``; ``host/tensor/tests/golden_blends.rs`` keeps the file
true to the Rust side) to 1e-6.
"""

import json
import pathlib

import pytest
import torch

import kasmina
from kasmina.torch import BlendParams, SeedSlot, blend, incubate

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "golden_blends.json"
TOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    return json.loads(FIXTURE.read_text())


def _tensor(values, *shape):
    return torch.tensor(values, dtype=torch.float32).view(*shape)


def _close(actual: torch.Tensor, expected, what: str):
    exp = torch.tensor(expected, dtype=torch.float64)
    act = actual.detach().to(torch.float64).reshape(-1)
    assert act.shape == exp.shape, f"{what}: {act.shape} vs {exp.shape}"
    diff = (act - exp).abs().max().item()
    assert diff <= TOL, f"{what}: max |python - rust| = {diff}"


def _params(case) -> BlendParams:
    mode = kasmina.BlendMode.parse(case["mode"])
    g = case["gate"]
    spec = kasmina.BlendSpec(mode, case["alpha_vec"], g["k"], g["tau"], g["alpha_lo"], g["alpha_hi"], False)
    return BlendParams.from_spec(spec)


def _run(golden, case):
    n, c, classes = golden["n"], golden["c"], golden["classes"]
    seed = torch.nn.Linear(c, c)
    with torch.no_grad():
        seed.weight.copy_(_tensor(golden["weight"], c, c))
        seed.bias.copy_(_tensor(golden["bias"], c))
    slot = SeedSlot(seed_id="seed", site="site", blueprint_id="bp", sha256="0" * 64, params=_params(case))
    for stage in ("TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY", "FOSSILIZED"):
        assert kasmina.can_transition(kasmina.SeedStage.parse(slot.stage), kasmina.SeedStage.parse(stage))
        slot.enter(stage)
        if stage == "BLENDING":
            slot.blending_alpha = case["alpha"]
        if stage == case["stage"]:
            break
    h = _tensor(golden["host"], n, c).requires_grad_(True)
    logits = _tensor(golden["logits"], n, classes) if case["uses_logits"] else None
    out = slot.run(h, seed, True, logits)
    assert slot.measure.failure is None, slot.measure.failure
    (out * _tensor(golden["upstream"], n, c)).sum().backward()
    return out, h, seed, slot.measure.stats


CASES = [
    "incubator",
    "convex_blending",
    "residual_blending",
    "channel_blending",
    "confidence_blending",
    "convex_shadowing",
    "residual_fossilized",
    "confidence_fossilized",
]


@pytest.mark.parametrize("name", CASES)
def test_slot_matches_the_rust_kernels(golden, name):
    case = next(c for c in golden["cases"] if c["name"] == name)
    out, h, seed, stats = _run(golden, case)
    _close(out, case["out"], "output")
    if case["grad_host"] is None:
        assert h.grad is None, "the host branch must be detached before fossilization"
    else:
        _close(h.grad, case["grad_host"], "host gradient")
    _close(seed.weight.grad, case["grad_weight"], "seed weight gradient")
    _close(seed.bias.grad, case["grad_bias"], "seed bias gradient")
    if case["stats"] is None:
        assert stats is None
    else:
        for key in ("alpha_mean", "alpha_p95", "clamped_fraction"):
            assert abs(getattr(stats, key) - case["stats"][key]) <= TOL, key
        for key in ("sparsity", "gate_mean"):
            if case["stats"][key] is None:
                assert getattr(stats, key) is None, key
            else:
                assert abs(getattr(stats, key) - case["stats"][key]) <= TOL, key


def test_the_fixture_covers_every_mode_and_stage(golden):
    modes = {c["mode"] for c in golden["cases"] if c["stats"] is not None}
    stages = {c["stage"] for c in golden["cases"]}
    assert modes == {"CONVEX", "RESIDUAL", "CHANNEL", "CONFIDENCE"}
    assert {"TRAINING", "BLENDING", "SHADOWING", "FOSSILIZED"} <= stages
    assert sorted(c["name"] for c in golden["cases"]) == sorted(CASES)


def test_channel_over_rank3_features(golden):
    g = golden["channel_rank3"]
    shape = g["shape"]
    params = BlendParams.from_spec(kasmina.BlendSpec.channel(g["alpha_vec"]))
    out, stats = blend(params, g["alpha"], _tensor(g["host"], *shape), _tensor(g["seed"], *shape))
    _close(out, g["out"], "rank-3 CHANNEL output")
    assert abs(stats.sparsity - g["sparsity"]) <= TOL


def test_a_perturbed_kernel_would_fail_the_comparison(golden):
    """The tolerance is tight enough to see a blend that is off by 1e-4."""
    case = next(c for c in golden["cases"] if c["name"] == "convex_blending")
    out, *_ = _run(golden, case)
    with pytest.raises(AssertionError):
        _close(out + 1e-4, case["out"], "perturbed output")


def test_incubator_value_is_the_host_exactly():
    h = torch.randn(3, 4)
    s = torch.randn(3, 4, requires_grad=True)
    out = incubate(h, s)
    assert torch.equal(out, h)
    out.sum().backward()
    assert torch.equal(s.grad, torch.ones(3, 4))


def test_blend_never_writes_its_inputs():
    h, s = torch.randn(4, 3), torch.randn(4, 3)
    h0, s0 = h.clone(), s.clone()
    logits = torch.randn(4, 5)
    for spec in (
        kasmina.BlendSpec.convex(),
        kasmina.BlendSpec.residual(),
        kasmina.BlendSpec.channel([0.2, 0.0, 1.0]),
        kasmina.BlendSpec.confidence(4.0, 0.1, 0.0, 1.0),
    ):
        blend(BlendParams.from_spec(spec), 0.5, h, s, logits)
    assert torch.equal(h, h0) and torch.equal(s, s0)
