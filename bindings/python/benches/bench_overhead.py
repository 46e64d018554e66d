#!/usr/bin/env python3
"""The grafter's per-step overhead: a training step of a model with one seed
blending under `kasmina.torch.Grafter` (against a real `kasmina serve`),
minus the step of the same model with the same seed module inlined by hand
(`lerp(h.detach(), seed(h.detach()), α)` in the model's own forward, the
seed's parameters in the same optimizer). Both run the same batch, the same
weights and kernel bytes, in interleaved rounds.

    ~/.cache/kasmina/venv/bin/python bindings/python/benches/bench_overhead.py \\
        --kasmina "$CARGO_TARGET_DIR/debug/kasmina"

The grafted step includes everything the grafter adds: the site wrapper,
blend statistics, the sampled-cosine isolation check, the step report round
trip to the daemon and the directives it returns (an α each step). The
host model (4 linear layers, width 512, batch 256, one torch thread) takes
~20 ms a step bare on the 2-core dev machine. The three variants (bare
host, inlined seed, grafted seed) alternate step by step, so load from
other processes falls on all three alike; medians are reported.
Goal: grafted / inlined <= 1.05.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

import kasmina
from kasmina.torch import Grafter

RUN = "bench-overhead"
SETTINGS = """
[lifecycle]
attach_timeout_steps = 5
training_steps = 2
blend_steps = 1000000
[gates]
latency_budget_us = 1000000
[plugins]
deadline_ms = 250
"""


class Adapter(nn.Module):
    """The seed: a bottleneck MLP adapter, width → 64 → width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, 64)
        self.up = nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(width, width)
        self.site = nn.Linear(width, width)
        self.mid = nn.Linear(width, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(torch.relu(self.site(torch.relu(self.inp(x)))))))


class Inlined(nn.Module):
    """The seed written into the model by hand, blending with a fixed α."""

    def __init__(self, base: nn.Module, seed: nn.Module, alpha: float) -> None:
        super().__init__()
        self.base, self.seed, self.alpha = base, seed, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x).detach()
        return torch.lerp(h, self.seed(h), self.alpha)


def descriptor(width: int) -> dict:
    io_spec = {"shape": ["Batch", {"Fixed": width}], "dtype": "F32"}
    return {
        "blueprint_id": "bench_adapter",
        "name": f"bench adapter {width}",
        "tier": "Safe",
        "parameter_bounds": {},
        "risk": 0.1,
        "quarantine_only": False,
        "approval_required": False,
        "interface": {"inputs": [io_spec], "outputs": [io_spec]},
    }


def timed_steps(model, optimizer, x, y, grafter=None, first_step=0, steps=20):
    started = time.perf_counter()
    for i in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if grafter is not None:
            grafter.step(first_step + i, loss)
        else:
            loss.item()  # the grafter reads the loss value too
    return (time.perf_counter() - started) / steps * 1e3


def _q(values, q):
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * q)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kasmina", required=True, help="the kasmina binary")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="measured steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared 2-core machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.width)
    y = torch.randint(0, 10, (args.batch,))
    with tempfile.TemporaryDirectory(prefix="kasmina-overhead-") as tmp:
        work = pathlib.Path(tmp)
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(Adapter(args.width)), buf)
        (work / "adapter.pt").write_bytes(buf.getvalue())
        (work / "adapter.json").write_text(json.dumps(descriptor(args.width)))
        (work / "settings.toml").write_text(SETTINGS)
        run = lambda *a: subprocess.run([args.kasmina, *a], check=True, capture_output=True)  # noqa: E731
        run("keygen", str(work / "k.key"))
        run("urza", "publish", str(work / "adapter.json"), str(work / "adapter.pt"), "--urza", str(work / "urza"))
        sock = work / "d.sock"
        daemon = subprocess.Popen(
            [
                args.kasmina,
                "serve",
                "--settings",
                str(work / "settings.toml"),
                "--socket",
                str(sock),
                "--urza",
                str(work / "urza"),
                "--key-file",
                str(work / "k.key"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(500):
                if sock.exists():
                    break
                time.sleep(0.02)
            time.sleep(0.2)
            key = kasmina.HmacKey.from_file(str(work / "k.key"))
            # Grafted: the model under the grafter, the seed grown by the daemon.
            torch.manual_seed(1)
            grafted = Net(args.width)
            opt_g = torch.optim.Adam(grafted.parameters(), lr=1e-4)
            grafter = Grafter.connect(sock, RUN)
            grafter.register(grafted, sites={"site": "site"}, slots={"seed": "site"}, example_input=x[:2])
            grafter.bind(opt_g)
            controller = kasmina.Client.connect(str(sock), "controller")
            cmd = (
                kasmina.Command.seed("seed", "GERMINATE", "bench_adapter")
                .annotations({"training_run_id": RUN, "mesh_layers": "site", "blend_mode": "CONVEX"})
                .sign(key)
            )
            controller.submit_command(cmd, check=True)
            step = 1
            while grafter.seed_stage("seed") != kasmina.SeedStage.BLENDING:
                timed_steps(grafted, opt_g, x, y, grafter, step, 1)
                step += 1
                if step > 50:
                    sys.exit(f"the seed did not reach BLENDING: {grafter.seeds()}")
            # Inlined: the same initial weights and the same kernel bytes, by hand.
            torch.manual_seed(1)
            inlined = Net(args.width)
            seed = torch.jit.load(io.BytesIO(buf.getvalue()))
            inlined.site = Inlined(inlined.site, seed, 0.5)
            opt_i = torch.optim.Adam(inlined.parameters(), lr=1e-4)
            # Bare: the host model alone, for scale.
            torch.manual_seed(1)
            bare = Net(args.width)
            opt_b = torch.optim.Adam(bare.parameters(), lr=1e-4)
            for model, opt in ((inlined, opt_i), (bare, opt_b)):
                timed_steps(model, opt, x, y, steps=3)
            results = {"bare": [], "inlined": [], "grafted": []}
            for _ in range(args.steps):
                results["bare"].append(timed_steps(bare, opt_b, x, y, steps=1))
                results["inlined"].append(timed_steps(inlined, opt_i, x, y, steps=1))
                results["grafted"].append(timed_steps(grafted, opt_g, x, y, grafter, step, 1))
                step += 1
            assert grafter.seed_stage("seed") == kasmina.SeedStage.BLENDING
            grafter.close()
        finally:
            daemon.terminate()
            daemon.wait(timeout=15)
    med = {k: statistics.median(v) for k, v in results.items()}
    overhead_us = (med["grafted"] - med["inlined"]) * 1e3
    out = {
        "bare_ms": round(med["bare"], 3),
        "inlined_ms": round(med["inlined"], 3),
        "grafted_ms": round(med["grafted"], 3),
        "overhead_us": round(overhead_us, 1),
        "ratio": round(med["grafted"] / med["inlined"], 4),
        "p10_p90_ms": {k: [round(_q(v, 0.1), 3), round(_q(v, 0.9), 3)] for k, v in results.items()},
        "steps": args.steps,
        "torch_threads": torch.get_num_threads(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    print(json.dumps(out, indent=2))
    print(
        f"grafted {med['grafted']:.2f} ms vs inlined {med['inlined']:.2f} ms per step "
        f"(bare host {med['bare']:.2f} ms): overhead {overhead_us:.0f} us, {med['grafted'] / med['inlined']:.3f}x (goal <= 1.05x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
