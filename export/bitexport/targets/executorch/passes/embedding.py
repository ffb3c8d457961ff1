"""Pass: the embedding table in float32 (default) or int8 (ExportOptions.embedding == "int8").

int8: one symmetric scale per row (absmax / 127) and ExecuTorch's `quantized_decomposed::
embedding_byte`, the operator its Llama export uses; its kernel ships in the stock runtimes'
quantized-kernel library (Android AAR, iOS kernels_quantized, the Python wheel's
executorch.kernels.quantized). A lookup reads one row per token, so the format changes file size,
not speed; int8 is lossy (relative error up to 1/254 per element), float32 is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult
from bitexport.targets.executorch.kernels import load_quantized_ops
from bitexport.model.decoder import BitNetDecoder


class Int8Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        self.register_buffer("weight_int8", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scales", scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_byte.default(
            self.weight_int8, self.weight_scales, None, -127, 127, tokens
        )


def quantize_embedding(model: BitNetDecoder, fmt: str) -> PassResult:
    """Store `model`'s embedding table (in place) in `fmt` ("fp32" or "int8").

    Run after et_head: a tied fp32 head reads embed_tokens.weight, which an int8 table replaces.
    """
    if fmt == "fp32":
        return PassResult(model, 0)
    if fmt != "int8":
        raise ValueError(f"embedding format {fmt!r} is not fp32 or int8")
    if model.lm_head is None:
        # the tied head must keep reading the float table: give it its own copy first
        model.lm_head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        with torch.no_grad():
            model.lm_head.weight.copy_(model.embed_tokens.weight)
    load_quantized_ops()
    model.embed_tokens = Int8Embedding(model.embed_tokens.weight)
    return PassResult(model, 1)
