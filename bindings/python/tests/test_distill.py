"""Knowledge distillation in the PyTorch grafter (SPEC §8), against the Rust
tensor plane's definition (host/tensor/src/kd.rs) and the real daemon: the
KD loss equals the Rust golden case and a computation written out by hand,
bad inputs are refused as the Rust side refuses them, the teacher's memory
is measured like the Rust side and refused over the host's budget, the
teacher is frozen, the KD term reaches the host with the step report, and
EMERGENCY with include_teacher drops the teacher (without it, it stays)."""

import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

import kasmina
from conftest import FAST_SETTINGS
from kasmina.torch import Grafter, kd_loss, mix_losses
from scenario import SITE, HostNet, batch, build

RUN = "py-distill"
WEIGHT, TEMPERATURE = 0.25, 3.0
# HostNet: fc1 64·64 + 64 and fc2 64·10 + 10 float32 parameters.
HOST_NET_BYTES = (64 * 64 + 64 + 64 * 10 + 10) * 4


def kd_settings(budget: int) -> str:
    kd = f"[distillation]\nweight = {WEIGHT}\ntemperature = {TEMPERATURE}\nteacher_memory_bytes = {budget}\n"
    return FAST_SETTINGS + kd


def scripted(module: nn.Module, freeze: bool = False):
    """A TorchScript teacher (the format Rust trainers load; deprecated in torch, still the contract's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = torch.jit.script(module)
        return torch.jit.freeze(out.eval()) if freeze else out


def kd_by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> float:
    """SPEC §8 written out in float64 with plain ops: T²·Σ p_t·(log p_t − log p_s) / N."""
    s, q = student.detach().double() / t, teacher.detach().double() / t
    p_t = torch.exp(q) / torch.exp(q).sum(dim=1, keepdim=True)
    log_p_s = s - torch.log(torch.exp(s).sum(dim=1, keepdim=True))
    return float((p_t * (torch.log(p_t) - log_p_s)).sum() * t * t / student.shape[0])


# ---------------------------------------------------------------- the loss, no daemon


def test_kd_loss_matches_the_rust_golden_case_and_a_hand_computation():
    # host/tensor/tests/registry_kd.rs: student [1, 2, 3], teacher [3, 2, 1], T = 2
    # → KL = 0.320157, × T² = 1.280627 (to 1e-5 there, as here).
    student = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 2.0, 1.0]], requires_grad=True)
    loss = kd_loss(student, teacher, 2.0)
    assert abs(loss.item() - 1.280627) < 1e-5, loss.item()
    assert abs(loss.item() / 4.0 - 0.320157) < 1e-5, "the T² factor is applied"
    assert abs(kd_by_hand(student, teacher, 2.0) - 1.280627) < 1e-5
    # Batch mean: the same row twice gives the same loss.
    two = kd_loss(torch.cat([student, student]), torch.cat([teacher, teacher]), 2.0)
    assert abs(two.item() - 1.280627) < 1e-5
    # Gradients reach the student only.
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None, "the teacher's logits are detached"
    # Identical logits: zero; a random batch: the hand computation.
    assert abs(kd_loss(student, student.detach(), 3.0).item()) < 1e-7
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(7, 10, generator=g) * 3, torch.randn(7, 10, generator=g) * 3
    for temperature in (0.5, 1.0, 2.0, 4.0):
        assert math.isclose(kd_loss(s, t, temperature).item(), kd_by_hand(s, t, temperature), rel_tol=1e-5)
    # Negative control: the hand computation tells temperatures apart.
    assert not math.isclose(kd_loss(s, t, 2.0).item(), kd_by_hand(s, t, 4.0), rel_tol=1e-3)
    # Mixing with the default weight (SPEC §8: 0.3).
    assert abs(mix_losses(torch.tensor(2.0), torch.tensor(1.0), 0.3).item() - (0.7 * 2.0 + 0.3 * 1.0)) < 1e-6


def test_kd_loss_refuses_what_the_rust_side_refuses():
    s = torch.randn(2, 3)
    cases = [
        (lambda: kd_loss(s, torch.randn(2, 4), 2.0), "shape_mismatch"),
        (lambda: kd_loss(s.view(6), s.view(6), 2.0), "wrong_rank"),
        (lambda: kd_loss(torch.randn(0, 3), torch.randn(0, 3), 2.0), "shape_mismatch"),
        (lambda: kd_loss(s, s, 0.0), "invalid_parameter"),
        (lambda: kd_loss(s, s, float("nan")), "invalid_parameter"),
        (lambda: mix_losses(s, s, 1.5), "invalid_parameter"),
    ]
    for call, code in cases:
        with pytest.raises(kasmina.ConfigError) as err:
            call()
        assert err.value.code == code, err.value


def test_teacher_memory_is_measured_like_the_rust_side():
    from kasmina.torch._distill import teacher_memory_bytes

    # Linear(8, 4): 32 + 4 floats = 144 bytes, the Rust fixture's figure.
    linear = nn.Linear(8, 4)
    assert teacher_memory_bytes(linear) == 144
    assert teacher_memory_bytes(scripted(nn.Linear(8, 4))) == 144
    assert teacher_memory_bytes(nn.Linear(8, 4).double()) == 288
    # A frozen TorchScript module keeps its weights as constants, not
    # parameters: measured by its serialized size, never as 0 bytes.
    frozen = scripted(nn.Linear(8, 4), freeze=True)
    assert list(frozen.parameters()) == []
    saved = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(frozen, saved)
    assert teacher_memory_bytes(frozen) == saved.getbuffer().nbytes > 144


# ---------------------------------------------------------------- against the daemon


def _register(daemon, model):
    grafter = Grafter.connect(daemon.socket, RUN)
    grafter.register(model, sites={SITE: "fc1"}, slots={"seed-a": SITE}, example_input=batch(0)[0][:2])
    return grafter


def test_a_teacher_over_the_hosts_budget_is_refused(make_daemon):
    daemon = make_daemon(kd_settings(HOST_NET_BYTES))
    model, _ = build()
    grafter = _register(daemon, model)
    assert grafter.settings.distillation.teacher_memory_bytes == HOST_NET_BYTES
    # Twice the budget (float64): refused, and nothing about the module changed.
    heavy = HostNet().double()
    with pytest.raises(kasmina.ConfigError) as err:
        grafter.set_teacher(heavy)
    assert err.value.code == "teacher_over_budget"
    assert (err.value.needed, err.value.budget) == (2 * HOST_NET_BYTES, HOST_NET_BYTES)
    assert not grafter.has_teacher and all(p.requires_grad for p in heavy.parameters()) and heavy.training
    # The model being grown cannot be its own teacher (it would be frozen, or trained).
    with pytest.raises(kasmina.ConfigError) as err:
        grafter.set_teacher(model)
    assert err.value.code == "teacher_shares_parameters"
    assert all(p.requires_grad for p in model.parameters())
    # A copy of it, exactly the budget, fits: installed and frozen, the model untouched.
    teacher = copy.deepcopy(model)
    assert grafter.set_teacher(teacher) == HOST_NET_BYTES
    assert grafter.has_teacher and grafter.teacher is teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_distillation_reaches_the_host_and_emergency_drops_the_teacher(make_daemon, hmac_key):
    daemon = make_daemon(kd_settings(1 << 20))
    model, optimizer = build()
    grafter = _register(daemon, model)
    grafter.bind(optimizer)
    controller = daemon.client("controller")
    torch.manual_seed(1)
    teacher = scripted(HostNet())
    frozen_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert grafter.set_teacher(teacher) == HOST_NET_BYTES
    grafter.client.drain_telemetry()

    def train(step):
        x, y = batch(step)
        logits = model(x)
        task = nn.functional.cross_entropy(logits, y)
        loss = grafter.distill(task, logits, x)
        expected_kd = kd_by_hand(logits, teacher(x), TEMPERATURE) if grafter.has_teacher else None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result = grafter.step(step, loss)
        kd_events = [e for e in grafter.client.drain_telemetry() if e.name == "kasmina.distillation.step"]
        return task, loss, expected_kd, result, kd_events

    def emergency(include_teacher):
        cmd = kasmina.Command.emergency("seed-a", cleanup=True, include_teacher=include_teacher).sign(hmac_key)
        controller.submit_command(cmd).raise_for_rejection()

    for step in (1, 2, 3):
        task, loss, expected_kd, result, kd_events = train(step)
        # The loss is the host's mix: (1 − w)·task + w·kd, with w and T from the settings.
        assert math.isclose(loss.item(), (1 - WEIGHT) * task.item() + WEIGHT * expected_kd, rel_tol=1e-5)
        # The step report carried the KD term, the weight and the teacher's memory to the host.
        assert len(kd_events) == 1, kd_events
        attrs = kd_events[0].attributes
        assert attrs["step"] == step and attrs["teacher_memory_bytes"] == HOST_NET_BYTES
        assert attrs["weight"] == WEIGHT and math.isclose(attrs["kd_loss"], expected_kd, rel_tol=1e-5)
    # The teacher never learned: no gradients, the same weights.
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, frozen_weights[k]) for k, v in teacher.state_dict().items())

    # Negative control: EMERGENCY without include_teacher leaves the teacher in place.
    emergency(include_teacher=False)
    _, _, _, result, kd_events = train(4)
    assert "teacher_dropped" not in [e.kind for e in result.events]
    assert grafter.has_teacher and len(kd_events) == 1

    # With include_teacher the DropTeacher directive reaches the grafter at the next step.
    emergency(include_teacher=True)
    _, _, _, result, kd_events = train(5)
    assert len(kd_events) == 1, "this step distilled before the directive came back"
    dropped = [(e.kind, e.detail) for e in result.events if e.kind == "teacher_dropped"]
    assert dropped == [("teacher_dropped", f"teacher dropped ({HOST_NET_BYTES} bytes)")], result.events
    assert any(isinstance(d, kasmina.GraftDirective.DropTeacher) for d in result.directives)
    assert not grafter.has_teacher and grafter.teacher is None
    # No teacher: distill() is the task loss itself, and no KD term is reported.
    task, loss, _, _, kd_events = train(6)
    assert loss is task and kd_events == []
