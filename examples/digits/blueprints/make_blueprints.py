"""Generates the digits demo's own blueprint: a deliberately unstable one.

    ~/.cache/kasmina/venv-torch/bin/python examples/digits/blueprints/make_blueprints.py

unstable_64.pt: [B, 64] -> [B, 64] with the right interface, but its output is
`fc(x) * exp(gain)` with gain = 100, which overflows float32 to +-inf. It
loads, verifies and prewarms fine (shapes match); the trainer sees non-finite
outputs, so gate G2 (stability) culls it. The good blueprint the demo grows is
`mlp_adapter_64` from host/kernels/fixtures.
"""
import os

import torch


class Unstable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)
        self.gain = torch.nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * torch.exp(self.gain)


def main() -> None:
    torch.manual_seed(0)
    here = os.path.dirname(os.path.abspath(__file__))
    torch.jit.script(Unstable()).save(os.path.join(here, "unstable_64.pt"))


if __name__ == "__main__":
    main()
