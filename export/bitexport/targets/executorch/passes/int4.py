"""Pass: TernaryLinear -> Int4TernaryLinear, torchao int4 weights + int8 dynamic activations
(`--weights int4`), which XNNPACK runs on a stock ExecuTorch runtime with no custom kernel.

Weights, exact: the int4 values are the ternary codes -1/0/+1 with a quantization scale of 1.0,
and each row's ternary scale multiplies the output afterwards in float32. (XNNPACK stores int4
scales, groupwise and per-channel alike, as bfloat16, which would round a ternary scale by up to
2**-9; torchao's own symmetric qparams are not exact either: max|w| / 7.5 sends +gamma to code 7.)
Granularity: one int4 block per row by default (XNNPACK wants blocks of a multiple of 32, so K is
padded with zero weights up to one); `group_size=32` gives the 8da4w layout, same values.

Activations, two modes:
- "xnnpack" (default): XNNPACK quantizes x per token itself, asymmetrically (256 levels over
  [min, max]) where BitNet uses absmax/127; the logits differ slightly from the reference
  (tolerance in tests/test_executorch.py).
- "exact": the graph quantizes x as the reference does (xq = clamp(round(x * 127/max|x|))) and
  appends two sentinel columns 127 and -128 (zero weights): XNNPACK's per-token range is then
  exactly [-128, 127], its scale exactly 1 and its zero point 0, so it requantizes xq to itself and
  the int32 dot product equals the reference's; y = (acc / s) * scale as BitLinear computes it.
  Bit for bit with the reference, at the cost of the quantization ops running outside XNNPACK.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult, TernaryLinear, replace_modules, split_outputs
from bitexport.model.quant import quantize_activations

XNNPACK_BLOCK = 32  # XNNPACK's int4 blocks (groups) must span a multiple of 32 inputs
ACTIVATIONS = ("xnnpack", "exact")


def _round_up(k: int, m: int) -> int:
    return (k + m - 1) // m * m


class Int4TernaryLinear(nn.Module):
    def __init__(self, t: TernaryLinear, group_size: int | None = None, activations: str = "xnnpack") -> None:
        super().__init__()
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

        if activations not in ACTIVATIONS:
            raise ValueError(f"int4 activations {activations!r} is not one of {ACTIVATIONS}")
        if group_size is not None and (group_size % XNNPACK_BLOCK or t.in_features % group_size):
            raise ValueError(f"int4 group size {group_size} must be a multiple of 32 dividing in_features {t.in_features}")
        self.exact = activations == "exact"
        k = t.in_features
        padded = _round_up(k + 2, XNNPACK_BLOCK) if self.exact else _round_up(k, XNNPACK_BLOCK)
        self.pad = padded - k
        codes = torch.zeros(t.out_features, padded, dtype=torch.int8)
        codes[:, :k] = t.codes
        self.linear = nn.Linear(padded, t.out_features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(codes.float())
        granularity = PerAxis(0) if group_size is None else PerGroup(group_size)
        quantize_(self, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=granularity),
                  filter_fn=lambda m, _: isinstance(m, nn.Linear))
        w = self.linear.weight
        with torch.no_grad():  # exact codes, unit scales (see the module doc)
            w.qdata.copy_(codes)
            w.scale.fill_(1.0)
            w.zero_point.zero_()
        self.register_buffer("row_scale", t.row_scale.clone())
        if self.pad:
            tail = torch.zeros(self.pad)
            if self.exact:
                tail[0], tail[1] = 127.0, -128.0
            self.register_buffer("tail", tail)
        self.splits = t.splits

    def _extend(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pad:
            return x
        return torch.cat([x, self.tail.expand(*x.shape[:-1], self.pad)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.exact:
            xq, s = quantize_activations(x)
            y = (self.linear(self._extend(xq)) / s) * self.row_scale
        else:
            y = self.linear(self._extend(x)) * self.row_scale
        return split_outputs(y, self.splits)

    def stored_bits(self) -> tuple[int, int]:
        """(bits stored, ternary weights held): 4-bit codes with their padding, XNNPACK's bf16
        block scales and our fp32 row scales."""
        w = self.linear.weight
        bits = 4 * w.qdata.numel() + 16 * w.scale.numel() + 32 * self.row_scale.numel()
        return bits, self.row_scale.numel() * (self.linear.in_features - self.pad)

    def dequantized_weight(self) -> torch.Tensor:
        """codes * scale [N, K] as the layer applies them (for tests)."""
        k = self.linear.in_features - self.pad
        return self.linear.weight.dequantize()[:, :k] * self.row_scale[:, None]


def to_int4(model: nn.Module, group_size: int | None = None, activations: str = "xnnpack") -> PassResult:
    return replace_modules(model, TernaryLinear, lambda t: Int4TernaryLinear(t, group_size, activations), "to_int4")
