"""Pass: TernaryLinear -> Fp32TernaryLinear, a plain float linear (`--weights fp32`, the baseline).

The weight is codes * scale in float32, a matrix XNNPACK's fp32 GEMM runs. The activations keep
the reference's per-token int8 fake quantization (round(x * s) clamped, then / s after the
product) so the model computes the same function and its greedy tokens match; only the float
summation order differs from the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, TernaryLinear, replace_modules, split_outputs
from bitexport.model.quant import quantize_activations


class Fp32TernaryLinear(nn.Module):
    def __init__(self, t: TernaryLinear) -> None:
        super().__init__()
        self.linear = nn.Linear(t.in_features, t.out_features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(t.codes.float() * t.row_scale[:, None])
        self.linear.weight.requires_grad_(False)
        self.splits = t.splits

    def stored_bits(self) -> tuple[int, int]:
        """(bits stored, ternary weights held)."""
        return 32 * self.linear.weight.numel(), self.linear.weight.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xq, s = quantize_activations(x)
        y = self.linear(xq) / s
        return split_outputs(y, self.splits)


def to_fp32(model: nn.Module) -> PassResult:
    return replace_modules(model, TernaryLinear, Fp32TernaryLinear, "to_fp32")
