"""SimAM, the parameter-free attention of Yang et al. (ICML 2021), over the valid steps of a sequence.

Each channel of each sample is weighted by sigmoid(e), e = (x - mu)^2 / (4 (var + lambda)) + 0.5, with mu and
var taken over the steps where `valid` is 1, the non-padded steps, so that padding does not pull the
statistics towards zero (SPEC section 6). Every valid step is gated, a dropped one too: which steps the
simulator dropped is not known to a deployed model, so the model is never told (issue 10).
"""

from __future__ import annotations

import torch
from torch import nn


def simam(x: torch.Tensor, valid: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """x (B, L, C), valid (B, L) in {0, 1} (1 = not padding): x weighted per step and channel; padding passes unchanged."""
    weights = valid.to(x.dtype).unsqueeze(-1)
    count = weights.sum(dim=1, keepdim=True)
    mean = (x * weights).sum(dim=1, keepdim=True) / count.clamp(min=1)
    squared = (x - mean).pow(2)
    # n - 1 in the variance as in the original SimAM.
    variance = (squared * weights).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    energy = squared / (4 * (variance + lam)) + 0.5
    return torch.where(weights > 0, x * torch.sigmoid(energy), x)


class SimAM(nn.Module):
    def __init__(self, lam: float = 1e-4):
        super().__init__()
        self.lam = lam

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return simam(x, valid, self.lam)
