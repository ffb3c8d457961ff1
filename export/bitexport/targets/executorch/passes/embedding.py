"""Pass: the embedding table in float32, int8 per row, or int4 per group of 32 (config.embedding).

A lookup reads one row per token, so the format changes file size, not speed. The quantized forms
use the operators ExecuTorch's own Llama export uses, whose kernels ship in the stock runtimes'
quantized-kernel library (Android AAR, iOS kernels_quantized, the Python wheel's
executorch.kernels.quantized):

- int8: `quantized_decomposed::embedding_byte`, codes int8 [V, H] and one float32 scale a row
  (8 bits + 32/H a weight); relative error up to 1/254 of the row's largest value.
- int4: `quantized_decomposed::embedding_4bit.dtype`, codes packed two to a byte (element 2i in
  the high nibble, stored + 8) and one float16 scale per 32 values (4.5 bits a weight), read back
  as float32. The runtime computes float32(code) x float32(scale) exactly (tested); eager PyTorch's
  composite of the op multiplies in float16 instead, so the eager module and the .pte may differ
  by fp16 rounding (~1e-3 relative) on this table.

The codes come from bitexport.model.tables (one quantizer for every target). XNNPACK cannot read
these layouts as a head, so a tied head keeps its own table (passes/head.py): the cheapest pair
is int4 embedding + int4 head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bitexport.model.decoder import BitNetDecoder
from bitexport.model.tables import INT4_GROUP, pack_nibbles_high_first, quantize_groups_int4, quantize_rows_int8
from bitexport.targets.executorch.kernels import load_quantized_ops
from bitexport.targets.executorch.passes.ternary import PassResult

EMBEDDING_FORMATS = ("fp32", "int8", "int4")


class Int8Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        codes, scales = quantize_rows_int8(weight.detach().float().numpy())
        self.register_buffer("weight_int8", torch.from_numpy(codes))
        self.register_buffer("weight_scales", torch.from_numpy(scales))

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scales[:, None]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_byte.default(
            self.weight_int8, self.weight_scales, None, -127, 127, tokens
        )


class Int4Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor, group: int = INT4_GROUP) -> None:
        super().__init__()
        codes, scales = quantize_groups_int4(weight.detach().float().numpy(), group, np.float16)
        self.register_buffer("weight_packed", torch.from_numpy(pack_nibbles_high_first(codes)))
        self.register_buffer("weight_scales", torch.from_numpy(scales))

    def dequantized(self) -> torch.Tensor:
        from bitexport.model.tables import dequantize_groups, unpack_nibbles_high_first

        codes = unpack_nibbles_high_first(self.weight_packed.numpy())
        return torch.from_numpy(dequantize_groups(codes, self.weight_scales.numpy()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_4bit.dtype(
            self.weight_packed, self.weight_scales, None, -8, 7, tokens, dtype=torch.float32
        )


def quantize_embedding(model: BitNetDecoder, fmt: str) -> PassResult:
    """Store `model`'s embedding table (in place) in `fmt` (one of EMBEDDING_FORMATS).

    Run after the head pass: a tied fp32 head reads embed_tokens.weight, which a quantized table
    replaces.
    """
    if fmt == "fp32":
        return PassResult(model, 0)
    if fmt not in EMBEDDING_FORMATS:
        raise ValueError(f"embedding format {fmt!r} is not one of {', '.join(EMBEDDING_FORMATS)}")
    if model.lm_head is None:
        # the tied head must keep reading the float table: give it its own copy first
        model.lm_head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        with torch.no_grad():
            model.lm_head.weight.copy_(model.embed_tokens.weight)
    load_quantized_ops()
    table = model.embed_tokens.weight
    model.embed_tokens = Int8Embedding(table) if fmt == "int8" else Int4Embedding(table)
    return PassResult(model, 1)
