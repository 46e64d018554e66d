"""Data-parallel ranks (SPEC §10, issue 15) for real: ``torchrun
--standalone --nproc-per-node 2`` runs ``dp_worker.py`` (gloo, CPU) under
:class:`kasmina.torch.DistributedGrafter` against the real ``kasmina
serve``. At every step both ranks run every seed in the same stage with
the same α and kernel digest, and hold bit-identical parameters after
``optimizer.step()``; DDP's wrapper grows when a seed starts training; a
NaN on rank 1 only culls that seed on both ranks at the same step.

The negative control runs the same job with re-wrapping switched off: the
seed's gradients are then never all-reduced, and the same fingerprint check
catches the replicas diverging — the check can fail.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List, Optional

import pytest

WORKER = pathlib.Path(__file__).resolve().parent / "dp_worker.py"
TORCHRUN = pathlib.Path(sys.executable).parent / "torchrun"


def run_job(daemon, key_file, out: pathlib.Path, mode: str, steps: int, apply_every: int = 1) -> List[List[Dict]]:
    if not TORCHRUN.is_file():
        raise pytest.UsageError(f"{TORCHRUN} not found: torchrun comes with torch in the test venv (scripts/setup.sh)")
    out.mkdir()
    env = dict(
        os.environ,
        KASMINA_SOCKET=str(daemon.socket),
        KASMINA_KEY_FILE=str(key_file),
        DP_OUT=str(out),
        DP_MODE=mode,
        DP_STEPS=str(steps),
        DP_APPLY_EVERY=str(apply_every),
        OMP_NUM_THREADS="1",
    )
    done = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(WORKER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return [[json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]


def diverged_at(ranks: List[List[Dict]]) -> Optional[int]:
    """The first step after which the ranks' parameters differ, if any."""
    for a, b in zip(*ranks):
        if a["fingerprint"] != b["fingerprint"]:
            return a["step"]
    return None


def first_step(records: List[Dict], seed: str, stage: str) -> Optional[int]:
    return next((r["step"] for r in records if r["seeds"].get(seed, [None])[0] == stage), None)


def test_two_ranks_apply_the_same_directives_at_the_same_step(daemon, key_file, tmp_path):
    r0, r1 = ranks = run_job(daemon, key_file, tmp_path / "normal", "normal", steps=16)
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == list(range(1, 17))
    for a, b in zip(r0, r1):
        # Same stage, α and kernel digest for every seed, on both ranks, every step.
        assert a["seeds"] == b["seeds"], (a["step"], a["seeds"], b["seeds"])
        assert a["wrapped"] == b["wrapped"] and a["wraps"] == b["wraps"]
        # Rank 0 reported that the ranks agreed.
        assert a["agreed"] and b["agreed"], a["step"]
    # Identical parameters after every optimizer.step().
    assert diverged_at(ranks) is None

    # seed-a grew: DDP's wrapper took its parameters in the step it started training.
    training = first_step(r0, "seed-a", "TRAINING")
    assert training is not None, [r["seeds"] for r in r0]
    before, at = r0[training - 2], r0[training - 1]
    assert at["wrapped"] == before["wrapped"] + 8320, (before, at)
    assert at["wraps"] > before["wraps"]
    assert first_step(r0, "seed-a", "BLENDING") is not None

    # seed-b: NaN on rank 1 only; culled (detached) on both ranks at the same step.
    assert any(r["poisoned"] for r in r1) and not any(r["poisoned"] for r in r0)
    detached = [
        next((r["step"] for r in records for k, s, _ in r["events"] if k == "detached" and s == "seed-b"), None)
        for records in ranks
    ]
    assert detached[0] is not None and detached[0] == detached[1], detached
    assert all("seed-b" not in r["seeds"] for r in r0[detached[0] - 1 :])
    daemon_view = json.loads((tmp_path / "normal" / "daemon.json").read_text())
    assert daemon_view["states"]["seed-b"] in ("CULLED", "EMBARGOED")
    assert ["seed-b", "G2", "false", "non_finite_outputs"] in daemon_view["verdicts"]
    assert not [v for v in daemon_view["verdicts"] if v[3] == "rank_divergence"]


def test_negative_control_without_rewrapping_the_replicas_diverge(daemon, key_file, tmp_path):
    ranks = run_job(daemon, key_file, tmp_path / "no-rewrap", "no_rewrap", steps=6)
    r0 = ranks[0]
    training = first_step(r0, "seed-a", "TRAINING")
    assert training is not None and training < 6
    # DDP never took the seed in, so its gradients were never averaged.
    assert all(r["wraps"] == 1 for r in r0)
    step = diverged_at(ranks)
    assert step is not None, "re-wrapping switched off must make the replicas diverge"
    assert step > training, (step, training)


def test_apply_every_k_steps_exchanges_only_on_multiples_of_k(daemon, key_file, tmp_path):
    r0, r1 = ranks = run_job(daemon, key_file, tmp_path / "every-3", "normal", steps=9, apply_every=3)
    assert diverged_at(ranks) is None
    for a, b in zip(r0, r1):
        assert a["seeds"] == b["seeds"]
        if a["step"] % 3:
            # Between exchanges nothing is reported and nothing changes.
            assert a["directives"] == 0 and not a["events"], a
            assert a["seeds"] == (r0[a["step"] - 2]["seeds"] if a["step"] > 1 else {}), a
    # seed-a, germinated before step 1, is attached at the first exchange (step 3).
    assert "seed-a" not in r0[1]["seeds"] and r0[2]["seeds"]["seed-a"][0] == "GERMINATED"
    assert r0[2]["agreed"] is True and r0[1]["agreed"] is None
