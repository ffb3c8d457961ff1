"""Pass: TernaryLinear -> Fp32TernaryLinear, a plain float linear (`--weights fp32`, the baseline).

The weight is codes * scale in float32, a matrix XNNPACK's fp32 GEMM runs. The activations keep
the reference's per-token int8 fake quantization (round(x * s) clamped, then / s after the
product) so the model computes the same function and its greedy tokens match; only the float
summation order differs from the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.lower.et_ternary import TernaryLinear, replace_modules
from bitexport.model.bitlinear import quantize_activations


class Fp32TernaryLinear(nn.Module):
    def __init__(self, t: TernaryLinear) -> None:
        super().__init__()
        self.linear = nn.Linear(t.in_features, t.out_features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(t.codes.float() * t.row_scale[:, None])
        self.linear.weight.requires_grad_(False)
        self.splits = t.splits

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xq, s = quantize_activations(x)
        y = self.linear(xq) / s
        return y if len(self.splits) == 1 else tuple(y.split(self.splits, dim=-1))


def to_fp32(model: nn.Module) -> nn.Module:
    replace_modules(model, TernaryLinear, Fp32TernaryLinear)
    return model
