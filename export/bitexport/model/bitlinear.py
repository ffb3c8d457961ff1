"""BitLinear: the BitNet b1.58 linear, for training and for inference/export.

The arithmetic (BitNet b1.58, W1.58A8):
    gamma = mean|W|,  Wq = clip(round(W / gamma), -1, 1)            (per tensor, absmean)
    s = 127 / max|x|, xq = clip(round(x * s), -128, 127)            (per token, absmax int8)
    y = ((xq . Wq) / s) * gamma

The inference form computes `xq . Wq` on integer-valued floats, which is exact in float32 while
|sum| < 2**24, and then applies `/ s` and `* gamma` in that order: the packed C++ kernel of
runtime_ops does the same operations in the same order, so the two agree bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitexport.model.norm import RMSNorm
from bitexport.model.quant import absmean_ternarize, fake_quant_activations, fake_quant_weight, quantize_activations


class BitLinear(nn.Module):
    """A bias-free linear layer with ternary weights and int8 per-token activations.

    Two states:
    - training: `weight` is a full-precision shadow parameter; the forward pass quantizes weights
      (absmean) and activations (absmax) with straight-through gradients.
    - frozen (inference/export): `codes` (int8 [out, in] in {-1, 0, 1}) and `scale` (float32 [1],
      gamma) are buffers; `weight` is None. Lowering passes read these and replace the module.

    `rms_norm` (transformers' `use_rms_norm`, Falcon-E): an RMSNorm on the input, applied before
    the activation quantization; None for plain BitNet. Every lowering must carry it (each target's
    linear lowering reads it or refuses the model).
    """

    def __init__(
        self, in_features: int, out_features: int, *, trainable: bool = False, input_norm_eps: float | None = None
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rms_norm = None if input_norm_eps is None else RMSNorm(in_features, input_norm_eps)
        if trainable:
            self.weight: nn.Parameter | None = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.normal_(self.weight, std=0.02)
            self.register_buffer("codes", None)
            self.register_buffer("scale", None)
        else:
            self.weight = None
            self.register_buffer("codes", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("scale", torch.ones(1))

    @classmethod
    def from_ternary(
        cls,
        codes: torch.Tensor,
        scale: torch.Tensor | float,
        norm_weight: torch.Tensor | None = None,
        norm_eps: float = 1e-6,
    ) -> "BitLinear":
        out_features, in_features = codes.shape
        m = cls(in_features, out_features, input_norm_eps=None if norm_weight is None else norm_eps)
        m.codes.copy_(codes.to(torch.int8))
        m.scale.copy_(torch.as_tensor(scale, dtype=torch.float32).reshape(1))
        if norm_weight is not None:
            with torch.no_grad():
                m.rms_norm.weight.copy_(norm_weight.float())
        return m

    @property
    def frozen(self) -> bool:
        return self.weight is None

    def freeze(self) -> None:
        """Replace the shadow weight with its ternary codes and scale (training -> inference)."""
        if self.frozen:
            return
        codes, gamma = absmean_ternarize(self.weight)
        self.weight = None
        self.codes = codes.to(gamma.device)
        self.scale = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rms_norm is not None:
            x = self.rms_norm(x)
        if self.weight is not None:
            return F.linear(fake_quant_activations(x), fake_quant_weight(self.weight))
        xq, s = quantize_activations(x.float())
        acc = F.linear(xq, self.codes.float())
        return (acc / s) * self.scale

    def extra_repr(self) -> str:
        state = "frozen" if self.frozen else "training"
        return f"in_features={self.in_features}, out_features={self.out_features}, {state}"
