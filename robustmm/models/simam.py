"""SimAM, the parameter-free attention of Yang et al. (ICML 2021), over the valid steps of a sequence.

Each channel of each sample is weighted by sigmoid(e), e = (x - mu)^2 / (4 (var + lambda)) + 0.5, with mu and
var taken over the steps where `mask` is 1 (valid and not dropped), so that padding and zeroed missing frames
do not pull the statistics towards zero (SPEC section 6).
"""

from __future__ import annotations

import torch
from torch import nn


def simam(x: torch.Tensor, mask: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """x (B, L, C), mask (B, L) in {0, 1}: x weighted per step and channel; masked-out steps pass unchanged."""
    weights = mask.to(x.dtype).unsqueeze(-1)
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return simam(x, mask, self.lam)
