"""Pass: TernaryLinear -> Tq2Linear, a call of bitexport's packed operator (`--weights tq2`).

`torch.ops.bitexport.tq2_linear(x, packed, weight_scale[N], N)` quantizes the activations per
token inside the operator and computes with 2-bit packed codes (layout: runtime_ops/tq2_layout.py).
It computes what BitLinear computes, bit for bit, so the lowered model's eager output equals the
reference's. At run time the .pte needs bitexport's kernel library (runtime_ops.load_kernels()).
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, TernaryLinear, replace_modules, split_outputs
from bitexport.runtime_ops import pack_tq2


class Tq2Linear(nn.Module):
    def __init__(self, t: TernaryLinear) -> None:
        super().__init__()
        self.register_buffer("packed_weight", pack_tq2(t.codes))
        self.register_buffer("weight_scale", t.row_scale.clone())
        self.out_features = t.out_features
        self.in_features = t.in_features
        self.splits = t.splits

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        y = torch.ops.bitexport.tq2_linear(x, self.packed_weight, self.weight_scale, self.out_features)
        return split_outputs(y, self.splits)


def to_tq2(model: nn.Module) -> PassResult:
    """Replace every TernaryLinear of `model` (in place)."""
    return replace_modules(model, TernaryLinear, Tq2Linear, "to_tq2")
