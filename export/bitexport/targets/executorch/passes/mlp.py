"""Pass: the reference MLP -> EtMLP, whose gate and up projections are one fused TernaryLinear.

gate_proj and up_proj read the same input, so one operator call quantizes it once (et_ternary
explains why this is exact). Activation, product and ffn_sub_norm are the reference's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, fuse_linears, replace_modules
from bitexport.model.decoder import MLP, BitNetDecoder


class EtMLP(nn.Module):
    def __init__(self, ref: MLP) -> None:
        super().__init__()
        self.gate_up_proj = fuse_linears([ref.gate_proj, ref.up_proj])
        self.down_proj = fuse_linears([ref.down_proj])
        self.ffn_sub_norm = ref.ffn_sub_norm
        self.relu2 = ref.relu2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up_proj(x)
        if self.relu2:
            g = F.relu(g)
            g = g * g  # square() exports as pow, which ExecuTorch's portable kernel runs slowly
        else:
            g = F.silu(g)
        h = g * u
        if self.ffn_sub_norm is not None:
            h = self.ffn_sub_norm(h)
        return self.down_proj(h)


def fuse_mlp(model: BitNetDecoder) -> PassResult:
    """Replace every reference MLP of `model` (in place)."""
    return replace_modules(model, MLP, EtMLP, "fuse_mlp")
