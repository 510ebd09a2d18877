"""Shared by the parity tests against torch models (diffusers, transformers)."""

import numpy as np


def rerandomize(module, seed: int, is_scale=lambda name, p: p.ndim == 1) -> None:
    """Give every parameter of the torch ``module`` a fresh random value, so that parity cannot
    pass by accident (all-ones norm scales hide a swapped norm, zero biases a missing one):
    biases ``0.1·N(0, 1)``, norm scales (``is_scale(name, p)``) ``1 + 0.2·N(0, 1)``, other
    vectors ``N(0, 1)``, weights ``N(0, 1)/√fan_in``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif is_scale(name, p):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(noise)
            else:
                p.copy_(noise / np.sqrt(p[0].numel()))
