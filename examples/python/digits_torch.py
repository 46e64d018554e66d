#!/usr/bin/env python3
"""The digits demo with the trainer in PyTorch, against a running `kasmina serve`.

The same scenario as the Rust demo (examples/digits, examples/demo): a small
digits classifier (a linear map 64 → 64, the seed site `hidden`, and a
linear head) trains twice with the same data order — once alone, once while
a scripted controller grows seeds through Kasmina: `seed-a` (the useful
`mlp_adapter_64`, RESIDUAL) trains, blends, shadows, passes probation and
fossilizes; `seed-b` (`unstable_64`) is culled by gate G2. Here the trainer
is PyTorch with `kasmina.torch.Grafter`, and the controller signs its
commands in Python with `kasmina.Command`.

    scripts/setup.sh            # once: the venv with torch and the kasmina wheel
    alias kasmina=$CARGO_TARGET_DIR/debug/kasmina    # or target/debug/kasmina
    kasmina keygen kasmina.key
    kasmina urza publish examples/commands/mlp_adapter_64.descriptor.json \\
        host/kernels/fixtures/mlp_adapter_64.pt --urza ./urza
    kasmina urza publish examples/digits/blueprints/unstable_64.descriptor.json \\
        examples/digits/blueprints/unstable_64.pt --urza ./urza
    kasmina serve --settings examples/digits/daemon.toml --socket demo.sock \\
        --urza ./urza --journal ./demo-journal --key-file kasmina.key &
    ~/.cache/kasmina/venv/bin/python examples/python/digits_torch.py \\
        --daemon demo.sock --key-file kasmina.key

`--teacher` distils the seeded run from the trained baseline (SPEC §8), as
the Rust demo's `--teacher` does: the baseline's network, frozen, becomes
the teacher (`Grafter.set_teacher`), and every step's loss goes through
`Grafter.distill` with the weight and temperature the daemon's settings
give; the KD term reaches the daemon with each step report.

What matches the Rust demo and what cannot: the lifecycle is driven by step
counts and gates, so the timeline — which gate passes or fails at which
step, for which reason, and each seed's fate — is the Rust demo's, decision
for decision (bindings/python/tests/test_digits.py checks it against a run
of the Rust binary). Accuracy and losses differ in the digits: the data
split and batch order come from Python's `random` instead of Rust's
ChaCha-based `StdRng`, and torch.optim.Adam rounds differently from
libtorch's C++ Adam, so the two runs see different numbers. Two Python runs
with the same seed are identical, numbers included.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

import kasmina
from kasmina.torch import Grafter

ROWS, FEATURES, CLASSES = 1797, 64, 10
TEST_FRACTION, VAL_FRACTION = 0.2, 0.15
SITE, RUN_ID = "hidden", "digits-demo"
SLOTS = ("seed-a", "seed-b")
GOOD_BLUEPRINT, BAD_BLUEPRINT = "mlp_adapter_64", "unstable_64"


# ---------------------------------------------------------------- data and model


def default_data_path() -> pathlib.Path:
    cache = os.environ.get("KASMINA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kasmina")
    return pathlib.Path(cache) / "data" / "digits.csv"


@dataclass
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load(path: pathlib.Path, seed: int) -> Split:
    """Reads digits.csv (64 pixels 0..16, then the label) and splits it for `seed`."""
    if not path.is_file():
        sys.exit(f"digits data not found at {path}; run scripts/setup.sh")
    pixels: List[List[float]] = []
    labels: List[int] = []
    for i, line in enumerate(path.read_text().splitlines()):
        values = line.split(",")
        if len(values) != FEATURES + 1:
            sys.exit(f"{path} line {i + 1}: {len(values)} columns, expected {FEATURES + 1}")
        row = [float(v) for v in values[:FEATURES]]
        if any(not 0.0 <= p <= 16.0 for p in row):
            sys.exit(f"{path} line {i + 1}: a pixel outside 0..16")
        pixels.append([p / 16.0 for p in row])
        labels.append(int(float(values[FEATURES])))
    if len(labels) != ROWS:
        sys.exit(f"{path} has {len(labels)} rows, expected {ROWS}")
    order = list(range(ROWS))
    random.Random(seed).shuffle(order)
    n_test = round(ROWS * TEST_FRACTION)
    n_val = round(ROWS * VAL_FRACTION)
    x = torch.tensor(pixels, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.int64)

    def take(idx):
        t = torch.tensor(idx, dtype=torch.int64)
        return x.index_select(0, t), y.index_select(0, t)

    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split(*take(train), *take(val), *take(test))


class HostNet(nn.Module):
    """A linear feature map 64 → hidden (the site `hidden`) and a linear head:
    in capacity a linear classifier, so a seed that adds nonlinearity helps."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class Batches:
    """The same shuffled batch order with and without seeds: the comparison is fair."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.rng, self.order = n, batch, random.Random(seed), []

    def next(self, data: Split):
        idx = []
        while len(idx) < self.batch:
            if not self.order:
                self.order = list(range(self.n))
                self.rng.shuffle(self.order)
            idx.append(self.order.pop())
        t = torch.tensor(idx, dtype=torch.int64)
        return data.train_x.index_select(0, t), data.train_y.index_select(0, t)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()


# ---------------------------------------------------------------- controller and timeline


@dataclass
class TimelineEntry:
    """One line of the lifecycle timeline, as the Rust demo records it."""

    step: int
    seed_id: str
    kind: str  # command | transition | gate | note
    what: str
    passed: Optional[bool]
    reason: str

    @staticmethod
    def from_event(step: int, e: kasmina.TelemetryEvent) -> Optional["TimelineEntry"]:
        if e.seed_id is None:
            return None
        if e.name == "kasmina.seed.transition":
            return TimelineEntry(step, e.seed_id, "transition", e.attr_text("to"), None, e.attr_text("reason"))
        if e.name == "kasmina.gate.verdict":
            return TimelineEntry(
                step, e.seed_id, "gate", e.attr_text("gate"), e.attr_text("passed") == "true", e.attr_text("reason")
            )
        return None


@dataclass
class Plan:
    good_at: int
    bad_at: int
    probation_steps: int
    good_blend: str = "RESIDUAL"

    @classmethod
    def for_steps(cls, steps: int, probation_steps: int, blend: str) -> "Plan":
        return cls(max(steps // 10, 1), max(steps * 3 // 20, 2), probation_steps, blend)


def blend_annotations(mode: str) -> Dict[str, str]:
    out = {"blend_mode": mode}
    if mode == "CHANNEL":
        out["alpha_vec"] = "[" + ",".join("1.0" if i % 2 == 0 else "0.5" for i in range(64)) + "]"
    elif mode == "CONFIDENCE":
        out.update(gate_k="4.0", gate_tau="0.5", alpha_lo="0.0", alpha_hi="1.0", confidence_logits_required="true")
    return out


class Controller:
    """The scripted controller (Tamiyo's stand-in): signed commands at set steps."""

    def __init__(self, client: kasmina.Client, key: kasmina.HmacKey, plan: Plan) -> None:
        self.client, self.key, self.plan = client, key, plan
        self.fossilize_sent = False

    def before_step(self, step: int, timeline: List[TimelineEntry]) -> None:
        if step == self.plan.good_at:
            self._send(step, "seed-a", "GERMINATE", GOOD_BLUEPRINT, self.plan.good_blend, timeline)
        if step == self.plan.bad_at:
            self._send(step, "seed-b", "GERMINATE", BAD_BLUEPRINT, "CONVEX", timeline)
        if not self.fossilize_sent:
            for s in self.client.seed_states():
                if (
                    s.seed_id == "seed-a"
                    and s.stage == kasmina.SeedStage.PROBATIONARY
                    and s.epoch >= self.plan.probation_steps
                ):
                    self._send(step, "seed-a", "FOSSILIZE", GOOD_BLUEPRINT, self.plan.good_blend, timeline)
                    self.fossilize_sent = True

    def _send(self, step, seed, op, blueprint, blend, timeline):
        cmd = (
            kasmina.Command.seed(seed, op, blueprint)
            .command_id_prefix(RUN_ID)
            .issued_by("digits-demo-controller-py")
            .annotations({"training_run_id": RUN_ID, "mesh_layers": SITE, **blend_annotations(blend)})
            .sign(self.key)
        )
        outcome = self.client.submit_command(cmd)
        reason = f"{op} {blueprint}"
        if outcome.reason is not None:
            reason += f": {outcome.reason.name} {outcome.attributes.get('detail', '')}"
        timeline.append(TimelineEntry(step, seed, "command", op, outcome.accepted, reason))


# ---------------------------------------------------------------- training


@dataclass
class RunStats:
    test_accuracy: float
    val_accuracy: float
    final_loss: float
    host_parameters: int
    parameters_added: int
    ms_per_step: float


def learning_rate_at(base: float, step: int, steps: int) -> float:
    """Cosine decay to 5 % of the base rate, for host and seeds alike."""
    progress = step / max(steps, 1)
    floor = 0.05
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(args, data: Split, control=None, teacher: Optional[nn.Module] = None) -> Tuple[RunStats, nn.Module]:
    """One run; returns its figures and the trained network."""
    torch.manual_seed(args.seed)
    model = HostNet(args.hidden)
    host_parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    grafter = None
    if control is not None:
        grafter = Grafter.connect(args.daemon, RUN_ID, name="digits-demo-trainer-py")
        grafter.register(model, sites={SITE: "fc1"}, slots={s: SITE for s in SLOTS}, example_input=data.train_x[:2])
        grafter.bind(optimizer)
        if teacher is not None:
            kd = grafter.settings.distillation
            size = grafter.set_teacher(teacher)
            print(f"distilling from the baseline: teacher {size} bytes, weight {kd.weight}, temperature {kd.temperature}")
    batches = Batches(data.train_x.shape[0], args.batch, args.seed)
    losses: deque = deque(maxlen=20)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        if control is not None:
            control["controller"].before_step(step, control["timeline"])
        x, y = batches.next(data)
        if grafter is not None and args.blend == "CONFIDENCE":
            # CONFIDENCE blends gate on the host's own confidence for this batch.
            with torch.no_grad(), grafter.host_only():
                host_logits = model(x)
            with grafter.logits(host_logits):
                logits = model(x)
        else:
            logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if grafter is not None:
            loss = grafter.distill(loss, logits, x)  # the task loss itself without a teacher
        lr = learning_rate_at(args.learning_rate, step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        metric = None
        if step % args.eval_every == 0 or step == args.steps:
            metric = evaluate_with(model, grafter, args, data.val_x, data.val_y)
        if grafter is not None:
            result = grafter.step(step, loss, metric=metric)
            record(step, grafter, result, control["timeline"])
        if args.progress and (step % 10 == 0 or step == args.steps):
            seeds = " ".join(f"{k}:{v.stage.name}" for k, v in (grafter.seeds().items() if grafter else []))
            print(f"\rstep {step:>4}/{args.steps} loss {loss.item():.3f} {seeds}\x1b[K", end="", file=sys.stderr)
    if args.progress:
        print(file=sys.stderr)
    ms_per_step = (time.perf_counter() - started) * 1e3 / max(args.steps, 1)
    stats = RunStats(
        test_accuracy=evaluate_with(model, grafter, args, data.test_x, data.test_y),
        val_accuracy=evaluate_with(model, grafter, args, data.val_x, data.val_y),
        final_loss=sum(losses) / max(len(losses), 1),
        host_parameters=host_parameters,
        parameters_added=grafter.fossilized_parameters() if grafter else 0,
        ms_per_step=ms_per_step,
    )
    if grafter is not None:
        control["seeds"] = [
            {"seed_id": s.seed_id, "stage": s.stage.name, "blueprint_id": s.blueprint_id, "alpha": s.alpha}
            for s in control["controller"].client.seed_states()
        ]
        grafter.close()
    return stats, model


def evaluate_with(model, grafter, args, x, y) -> float:
    with torch.no_grad():
        if grafter is not None and args.blend == "CONFIDENCE":
            with grafter.host_only():
                host_logits = model(x)
            with grafter.logits(host_logits):
                return accuracy(model(x), y)
        return accuracy(model(x), y)


def record(step: int, grafter: Grafter, result, timeline: List[TimelineEntry]) -> None:
    """Telemetry and the grafter's own events, into the timeline."""
    for event in grafter.client.drain_telemetry():
        entry = TimelineEntry.from_event(step, event)
        if entry is not None:
            timeline.append(entry)
    for e in result.events:
        if e.kind == "detached":
            timeline.append(TimelineEntry(step, e.seed_id, "note", "", None, f"detached: {e.detail}"))
        elif e.kind == "refused":
            timeline.append(TimelineEntry(step, e.seed_id or "-", "note", "", None, e.detail))


# ---------------------------------------------------------------- report


def render(outcome: Dict) -> str:
    lines = []
    timeline = outcome["timeline"]
    for seed in sorted({t["seed_id"] for t in timeline if t["seed_id"] != "-"}):
        lines.append(f"\nlifecycle of {seed}")
        lines.append(f"  {'step':>5}  {'event':<10} {'stage/gate':<13} {'verdict':<7} reason")
        for t in (t for t in timeline if t["seed_id"] == seed):
            verdict = {True: "pass", False: "FAIL", None: ""}[t["passed"]]
            lines.append(f"  {t['step']:>5}  {t['kind']:<10} {t['what']:<13} {verdict:<7} {t['reason']}")
    lines.append("\nfinal seed states")
    for s in outcome["seeds"]:
        lines.append(
            f"  {s['seed_id']:<8} {s['stage']:<13} blueprint {s['blueprint_id'] or '-':<16} alpha {s['alpha']:.2f}"
        )
    b, w = outcome["baseline"], outcome["seeded"]
    lines.append(f"\n  {'':<22} {'baseline':>10} {'with seeds':>12}")
    for label, key, fmt in (
        ("test accuracy", "test_accuracy", ".4f"),
        ("validation accuracy", "val_accuracy", ".4f"),
        ("final train loss", "final_loss", ".4f"),
        ("host parameters", "host_parameters", ""),
        ("parameters added", "parameters_added", ""),
        ("ms per step", "ms_per_step", ".2f"),
    ):
        if b is None:
            lines.append(f"  {label:<22} {'-':>10} {format(w[key], fmt):>12}")
        else:
            lines.append(f"  {label:<22} {format(b[key], fmt):>10} {format(w[key], fmt):>12}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Grow seeds in a PyTorch digits classifier against `kasmina serve`.")
    p.add_argument(
        "--daemon", required=True, help="Unix socket of a running `kasmina serve` (serving the demo blueprints)"
    )
    p.add_argument("--key-file", required=True, help="HMAC key file (hex) shared with the daemon")
    p.add_argument("--steps", type=int, default=400, help="training steps per run (default 400)")
    p.add_argument("--seed", type=int, default=7, help="seed for the split, the initialisation and the batch order")
    p.add_argument("--data", type=pathlib.Path, default=None, help="digits.csv (default: the set-up cache)")
    p.add_argument(
        "--blend", default="residual", help="blend of the useful seed: convex, residual, channel or confidence"
    )
    p.add_argument(
        "--probation-steps",
        type=int,
        default=20,
        help="the daemon's lifecycle.probation_steps (examples/digits/daemon.toml: 20)",
    )
    p.add_argument("--summary", type=pathlib.Path, default=None, help="write the JSON summary here")
    p.add_argument("--no-baseline", action="store_true", help="skip the run without seeds")
    p.add_argument("--teacher", action="store_true", help="distil the seeded run from the trained baseline")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    if args.teacher and args.no_baseline:
        p.error("--teacher distils from the baseline run: drop --no-baseline")
    args.blend = args.blend.upper()
    if args.blend not in ("CONVEX", "RESIDUAL", "CHANNEL", "CONFIDENCE"):
        p.error(f"unknown --blend {args.blend!r}")
    args.batch, args.hidden, args.learning_rate, args.eval_every = 64, 64, 1e-2, 5
    args.progress = not args.quiet
    # One thread: these ops are far too small to split, and on a busy machine
    # two OpenMP threads spend more time waiting for each other than computing.
    torch.set_num_threads(1)
    data = load(args.data or default_data_path(), args.seed)
    print(
        f"digits: {data.train_x.shape[0]} train / {data.val_x.shape[0]} validation / {data.test_x.shape[0]} test images; "
        f"{args.steps} steps per run on cpu (PyTorch {torch.__version__}, kasmina {kasmina.__version__})"
    )
    key = kasmina.HmacKey.from_file(args.key_file)
    baseline, teacher = None, None
    if not args.no_baseline:
        baseline, trained = train(args, data)
        # Training is over: a frozen copy of the baseline is the teacher.
        teacher = copy.deepcopy(trained) if args.teacher else None
    controller_client = kasmina.Client.connect(args.daemon, kasmina.Role.CONTROLLER, "digits-demo-controller-py")
    control = {
        "controller": Controller(controller_client, key, Plan.for_steps(args.steps, args.probation_steps, args.blend)),
        "timeline": [],
    }
    seeded, _ = train(args, data, control, teacher)
    outcome = {
        "baseline": None if baseline is None else asdict(baseline),
        "seeded": asdict(seeded),
        "timeline": [asdict(t) for t in control["timeline"]],
        "seeds": control["seeds"],
    }
    print(render(outcome))
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps({"mode": "daemon-python", "outcome": outcome}, indent=2))
        print(f"\nJSON summary: {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
