#!/usr/bin/env python3
"""The per-step cost of the data-parallel control-group exchange of
`kasmina.torch.DistributedGrafter` at 2 ranks (gloo, CPU), without the
daemon round trip and without training: what every rank pays each step on
top of the single-process grafter.

    ~/.cache/kasmina/venv/bin/torchrun --standalone --nproc-per-node 2 \\
        bindings/python/benches/bench_distributed.py [--steps 2000]

Measured, median per step over interleaved rounds:

- `exchange`: one step's control traffic on a quiet step — each rank's real
  postcard step report (two seeds) all-gathered, then rank 0's answer (an
  encoded broadcast of the size a Stage directive makes) broadcast back:
  2 collectives while both fit the 4 KiB first-round slot;
- `exchange+agree`: the same plus the trainable-set agreement (one more
  all-gather of a 32-byte digest), which runs only on steps that brought
  directives;
- `apply_every=k`: `exchange` amortised over k steps (only every k-th step
  exchanges; the steps between only measure isolation locally).

Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch.distributed as dist

import kasmina
from kasmina.torch._distributed import _ControlGroup


def report_bytes(step: int, rank: int) -> bytes:
    seeds = [
        kasmina.SeedStepReport(
            seed_id,
            kasmina.SeedStage.BLENDING,
            True,
            "ab" * 32,
            loss=1.0 + rank,
            kernel_latency_us=120,
            max_gradient_cosine=0.01,
            alpha=0.5,
        )
        for seed_id in ("seed-a", "seed-b")
    ]
    return kasmina.StepReport(step, "bench-dp", 0.7, 0.5, seeds).to_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    group = _ControlGroup(60.0)
    answer = b"\x00" * 96  # about the postcard size of one Stage directive plus the rank summary
    digest = b"\x11" * 32

    def exchange(step: int) -> None:
        group.all_gather(report_bytes(step, group.rank))
        group.broadcast(0, step + 1, answer)

    def exchange_agree(step: int) -> None:
        exchange(step)
        group.all_gather(digest)

    timings = {"exchange": [], "exchange+agree": []}
    for step in range(1, 200):  # warm-up: connections, allocator
        exchange_agree(step)
    for step in range(1, args.steps + 1):
        for name, fn in (("exchange", exchange), ("exchange+agree", exchange_agree)):
            started = time.perf_counter_ns()
            fn(step)
            timings[name].append((time.perf_counter_ns() - started) / 1000.0)
    if group.rank == 0:
        median = {k: statistics.median(v) for k, v in timings.items()}
        p95 = {k: sorted(v)[int(0.95 * len(v))] for k, v in timings.items()}
        out = {
            "world_size": group.world_size,
            "steps": args.steps,
            "report_bytes": len(report_bytes(1, 0)),
            "median_us": {k: round(v, 1) for k, v in median.items()},
            "p95_us": {k: round(v, 1) for k, v in p95.items()},
            "apply_every_us": {k: round(median["exchange"] / k, 1) for k in (1, 4, 16)},
        }
        print(json.dumps(out))
    group.barrier()
    group.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
