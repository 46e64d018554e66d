"""Gradient isolation (SPEC §6): the identity-paired sampled cosine is 0 for
separate graphs whatever their width, sees a shared parameter, and samples
O(k) coordinates per parameter."""

import torch
from torch import nn

from kasmina.torch import sampled_cosine


def _grads(host: nn.Module, seed: nn.Module, x: torch.Tensor, share: bool):
    h = host(x)
    s = seed(h.detach())
    out = h + s
    if share:
        # The seed computes through a host parameter: what isolation must catch.
        out = out + (s * host.weight.sum())
    out.square().sum().backward()


def test_separate_graphs_give_zero_at_any_width():
    for width in (8, 512):
        torch.manual_seed(0)
        host, seed = nn.Linear(width, width), nn.Linear(width, width)
        _grads(host, seed, torch.randn(4, width), share=False)
        cos, shared = sampled_cosine(list(host.parameters()), list(seed.parameters()), k=64)
        assert (cos, shared) == (0.0, 0)


def test_a_shared_parameter_is_seen():
    torch.manual_seed(0)
    host, seed = nn.Linear(16, 16), nn.Linear(16, 16)
    _grads(host, seed, torch.randn(4, 16), share=True)
    seed_params = list(seed.parameters()) + [host.weight]  # the kernel also trains a host parameter
    cos, shared = sampled_cosine(list(host.parameters()), seed_params, k=64)
    assert shared == 1
    assert cos > 0.5, cos


def test_parameters_without_gradients_count_for_nothing():
    host, seed = nn.Linear(4, 4), nn.Linear(4, 4)
    assert sampled_cosine(list(host.parameters()), list(seed.parameters()), k=8) == (0.0, 0)


def test_sampling_matches_the_exact_cosine_when_k_covers_everything():
    torch.manual_seed(1)
    a = nn.Parameter(torch.randn(300))
    b = nn.Parameter(torch.randn(50))
    a.grad, b.grad = torch.randn(300), torch.randn(50)
    # a is shared: both vectors carry it; b is the seed's alone.
    cos, shared = sampled_cosine([a], [a, b], k=1000)
    ga, gb = a.grad.double().square().sum().item(), b.grad.double().square().sum().item()
    assert shared == 1
    assert abs(cos - ga / (ga * (ga + gb)) ** 0.5) < 1e-6
    # Sampled (k < numel): close to the exact value, never outside [0, 1].
    cos_k, _ = sampled_cosine([a], [a, b], k=128)
    assert 0.0 <= cos_k <= 1.0 and abs(cos_k - cos) < 0.2
