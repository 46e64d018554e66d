"""``kasmina.torch``: grow seeds in a running PyTorch model.

Shaped like adapter libraries: :meth:`Grafter.register` replaces each named
seed-site submodule with a :class:`SeedSite` that keeps the original as
``base_layer`` and holds the seeds in an ``nn.ModuleDict``; the control
plane (``kasmina serve``) decides what grows, and the grafter applies it:
kernels load with ``torch.jit.load`` only after their SHA-256 matches the
directive, blends follow SPEC §5 op for op with the Rust tensor plane,
gradient isolation is measured every step, and seed parameters join and
leave the optimizer's param groups. Knowledge distillation
(:meth:`Grafter.set_teacher`, :meth:`Grafter.distill`, :func:`kd_loss`)
is SPEC §8's, op for op the Rust tensor plane's.

Plain Python over :mod:`kasmina` (the native client); importing it needs
PyTorch, importing :mod:`kasmina` does not.

Data-parallel jobs (``torchrun``) use :class:`DistributedGrafter` on every
rank: only rank 0 talks to the control plane, every rank applies the same
directives at the same step, and DDP is re-wrapped identically whenever the
trainable parameters change.
"""

from kasmina.torch._blend import BlendParams, BlendStats, blend, incubate
from kasmina.torch._distill import kd_loss, mix_losses
from kasmina.torch._distributed import DistributedGrafter
from kasmina.torch._grafter import STATE_FORMAT, Grafter, SeedView, StepResult, TrainerEvent
from kasmina.torch._isolation import sampled_cosine
from kasmina.torch._site import SeedSite
from kasmina.torch._slot import SeedSlot

__all__ = [
    "Grafter",
    "DistributedGrafter",
    "SeedSite",
    "SeedSlot",
    "SeedView",
    "StepResult",
    "TrainerEvent",
    "BlendParams",
    "BlendStats",
    "blend",
    "incubate",
    "kd_loss",
    "mix_losses",
    "sampled_cosine",
    "STATE_FORMAT",
]
