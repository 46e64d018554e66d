"""One rank of the data-parallel test (``test_distributed.py`` starts it
with ``torchrun --standalone --nproc-per-node 2``): the scenario's host net
under :class:`kasmina.torch.DistributedGrafter` on gloo, against the real
``kasmina serve``. Each rank trains on its own shard and writes one JSON
line per step — the seeds as it runs them after the step's directives
(stage, α, kernel digest), a fingerprint of every parameter after
``optimizer.step()``, the size of its DDP wrapper — for the test to
compare across ranks.

Environment: ``KASMINA_SOCKET``, ``KASMINA_KEY_FILE``, ``DP_OUT`` (a
directory), ``DP_STEPS``, ``DP_MODE`` (``normal``; ``no_rewrap``: the
negative control, DDP is never re-wrapped when seeds start training),
``DP_APPLY_EVERY`` (exchange and apply directives every that many steps).
Rank 0 plays the controller too: it germinates ``seed-a`` at step 1 and
``seed-b`` at step 3; rank 1 (only) makes ``seed-b``'s output NaN once it
trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kasmina  # noqa: E402
from conftest import germinate  # noqa: E402
from kasmina.torch import DistributedGrafter  # noqa: E402
from scenario import SITE, HostNet, batch  # noqa: E402

RUN = "py-dp"


def fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(bytes(p.detach().contiguous().view(-1).view(torch.uint8).tolist()))
    return h.hexdigest()


def poison(slot) -> None:
    """Rank 1 only: the seed's output becomes NaN (the kernel itself is untouched)."""
    original = slot._forward

    def forward(h, module, stage, train, logits):
        out, seed, stats = original(h, module, stage, train, logits)
        return out, seed * float("nan"), stats

    slot._forward = forward


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    socket, mode = os.environ["KASMINA_SOCKET"], os.environ.get("DP_MODE", "normal")
    steps = int(os.environ.get("DP_STEPS", "16"))
    torch.manual_seed(0)
    model = HostNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    apply_every = int(os.environ.get("DP_APPLY_EVERY", "1"))
    grafter = DistributedGrafter.connect(socket, RUN, control_timeout=60.0, apply_every=apply_every)
    grafter.register(model, sites={SITE: "fc1"}, slots={"seed-a": SITE, "seed-b": SITE}, example_input=batch(0)[0][:2])
    grafter.bind(optimizer)
    if mode == "no_rewrap":
        grafter._rewrap_enabled = False
    controller = key = None
    if rank == 0:
        controller = kasmina.Client.connect(socket, "controller", "dp-controller", timeout=30.0)
        key = kasmina.HmacKey.from_file(os.environ["KASMINA_KEY_FILE"])
    poisoned = False
    out = open(pathlib.Path(os.environ["DP_OUT"]) / f"rank{rank}.jsonl", "w")
    for step in range(1, steps + 1):
        if rank == 0 and step in (1, 3):
            seed = "seed-a" if step == 1 else "seed-b"
            germinate(controller, key, RUN, seed, "mlp_adapter_64", SITE, {"blend_mode": "RESIDUAL"}).raise_for_rejection()
        slot = model.fc1.slots.get("seed-b")
        if rank == 1 and slot is not None and slot.stage == "TRAINING" and not poisoned:
            poison(slot)
            poisoned = True
        x, y = batch(step * world + rank)  # each rank its own shard
        loss = nn.functional.cross_entropy(grafter.ddp(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step, "fingerprint": fingerprint(model), "wrapped_before": grafter.wrapped_parameters}
        result = grafter.step(step, loss, metric=0.5)
        record.update(
            seeds={k: [v.stage.name, v.alpha, v.sha256] for k, v in sorted(grafter.seeds().items())},
            wrapped=grafter.wrapped_parameters,
            wraps=grafter.wraps,
            agreed=None if grafter.rank_summary is None else grafter.rank_summary.agreed,
            directives=len(result.directives),
            events=[[e.kind, e.seed_id, e.detail] for e in result.events],
            poisoned=poisoned,
        )
        out.write(json.dumps(record) + "\n")
        out.flush()
        print(f"rank {rank} step {step}: {record['seeds']} wraps={record['wraps']}", file=sys.stderr, flush=True)
    if rank == 0:
        states = {s.seed_id: s.stage.name for s in controller.seed_states()}
        verdicts = [
            [e.seed_id, e.attr_text("gate"), e.attr_text("passed"), e.attr_text("reason")]
            for e in grafter.client.drain_telemetry()
            if e.name in ("kasmina.gate.verdict", "kasmina.ranks.divergence")
        ]
        (pathlib.Path(os.environ["DP_OUT"]) / "daemon.json").write_text(
            json.dumps({"states": states, "verdicts": verdicts})
        )
    out.close()
    grafter.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
