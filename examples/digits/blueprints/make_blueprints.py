"""Generates the digits demo's own blueprints and their Urza descriptors.

    ~/.cache/kasmina/venv/bin/python examples/digits/blueprints/make_blueprints.py

Each blueprint is a TorchScript module `<id>.pt` beside a descriptor
`<id>.descriptor.json`; the demo publishes the pair into its Urza library
exactly as a user would with

    kasmina urza publish examples/digits/blueprints/<id>.descriptor.json \\
        examples/digits/blueprints/<id>.pt --urza ./urza

For the linear host (`--host linear`, one site `hidden` of [B, 64]) the good
blueprint is `mlp_adapter_64` from host/kernels/fixtures; this script adds:

- `unstable_64`: [B, 64] -> [B, 64] with the right interface, but its output
  is `fc(x) * exp(gain)` with gain = 100, which overflows float32 to +-inf.
  It loads, verifies and prewarms fine; the trainer sees non-finite outputs,
  so gate G2 (stability) culls it.

For the convolutional host (`--host conv`: sites `block1` [B, 8, 8, 8] and
`block2` [B, 16, 4, 4]):

- `conv_residual_8`: a residual 3x3 conv block for `block1` (two convs, the
  second zero-initialised, so the grafted seed starts as a no-op);
- `channel_attention_16`: squeeze-and-excitation channel attention for
  `block2`: x * tanh(fc2(relu(fc1(mean_hw(x))))), fc2 zero-initialised, so
  with a residual blend it rescales channels by (1 + gate) and starts at 1;
- `unstable_conv_16`: the unstable blueprint at `block2`'s shape (a 1x1 conv
  times exp(100)); G2 culls it.

Modules are built with torch.jit.script so their parameters stay trainable
when loaded with tch's TrainableCModule. Weights come from a fixed seed.
"""

import json
import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Unstable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.gain = nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * torch.exp(self.gain)


class UnstableConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.tensor(100.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.gain)


class ResidualConv(nn.Module):
    """3x3 conv, ReLU, 3x3 conv (zero-initialised): the residual branch of a block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: a per-channel gate from the pooled features."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, reduced)
        self.fc2 = nn.Linear(reduced, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=[2, 3])
        gate = torch.tanh(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gate[:, :, None, None]


def spec(*dims):
    """A TensorSpec in leyline's serde form: 'Batch' or {'Fixed': n}."""
    return {"shape": ["Batch" if d == "B" else {"Fixed": d} for d in dims], "dtype": "F32"}


def descriptor(blueprint_id, name, tier, risk, io, bounds):
    return {
        "blueprint_id": blueprint_id,
        "name": name,
        "tier": tier,
        "parameter_bounds": bounds,
        "risk": risk,
        "quarantine_only": False,
        "approval_required": False,
        "interface": {"inputs": [io], "outputs": [io]},
    }


TRAINABLE = {"learning_rate": {"min": 1e-5, "max": 1e-1}}

BLUEPRINTS = [
    # (id, module factory, descriptor)
    ("unstable_64", lambda: Unstable(),
     descriptor("unstable_64", "Unstable adapter 64 (overflows: demo of a gate failure)", "Experimental", 0.6,
                spec("B", 64), {})),
    ("conv_residual_8", lambda: ResidualConv(8),
     descriptor("conv_residual_8", "Residual 3x3 conv block, 8 channels at 8x8", "Safe", 0.2,
                spec("B", 8, 8, 8), TRAINABLE)),
    ("channel_attention_16", lambda: ChannelAttention(16, 8),
     descriptor("channel_attention_16", "Channel attention (squeeze-excitation), 16 channels at 4x4", "Safe", 0.1,
                spec("B", 16, 4, 4), TRAINABLE)),
    ("unstable_conv_16", lambda: UnstableConv(16),
     descriptor("unstable_conv_16", "Unstable 1x1 conv, 16 channels (overflows: demo of a gate failure)",
                "Experimental", 0.6, spec("B", 16, 4, 4), {})),
]


def main() -> None:
    torch.manual_seed(0)
    for blueprint_id, make, desc in BLUEPRINTS:
        module = torch.jit.script(make())
        path = os.path.join(HERE, f"{blueprint_id}.pt")
        module.save(path)
        # Check the declared interface against the real module before recording it.
        dims = [2 if d == "Batch" else d["Fixed"] for d in desc["interface"]["inputs"][0]["shape"]]
        out = module(torch.randn(*dims))
        assert list(out.shape) == dims, (blueprint_id, list(out.shape), dims)
        with open(os.path.join(HERE, f"{blueprint_id}.descriptor.json"), "w") as f:
            json.dump(desc, f, indent=2)
            f.write("\n")
        params = sum(p.numel() for p in module.parameters())
        print(f"{blueprint_id}.pt: {os.path.getsize(path)} bytes, {params} parameters, out {list(out.shape)}")


if __name__ == "__main__":
    main()
