"""A small PyTorch host with one seed site and the loop the tests drive."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from kasmina.torch import Grafter, StepResult

SITE = "hidden"


class HostNet(nn.Module):
    """64 → 64 (the seed site ``fc1``) → 10: the digits demo's host shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def batch(step: int, n: int = 32):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.rand(n, 64, generator=g)
    y = (x[:, :10].argmax(dim=1)).long()
    return x, y


def build(seed: int = 0):
    torch.manual_seed(seed)
    model = HostNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grafter: Optional[Grafter],
    step: int,
    metric: Optional[float] = None,
) -> Optional[StepResult]:
    x, y = batch(step)
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if grafter is None:
        return None
    return grafter.step(step, loss, metric=metric)


def stages(grafter: Grafter) -> Dict[str, str]:
    return {k: v.stage.name for k, v in grafter.seeds().items()}


def run_until(
    model, optimizer, grafter, first: int, last: int, before: Optional[Callable[[int], None]] = None
) -> List[StepResult]:
    results = []
    for step in range(first, last + 1):
        if before is not None:
            before(step)
        results.append(train_step(model, optimizer, grafter, step, metric=0.5))
    return results
