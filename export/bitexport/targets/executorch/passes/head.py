"""Pass: the output head in int4 groupwise, int8 per channel, or kept in float32 (config.head).

int4: torchao int4 weights, group 32 (per row where hidden_size is not a multiple of 32), int8
dynamic activations, the layout XNNPACK runs on a stock runtime. The head is not ternary, so this
is lossy (random Gaussian heads: ~7 % rms weight error per group); tests compare it with a
reference holding the same dequantized weights.
int8: torchao int8 weights, one symmetric scale per output row (XNNPACK's qc8w, fp32 scales, so
the module computes what the .pte computes), int8 dynamic activations per token; ~0.4 % rms weight
error. A quantized head, tied or not, gets its own copy: the embedding table keeps its own format
(passes/embedding.py), since a lookup cannot read XNNPACK's packed weights.
(No fp16 head: XNNPACK on x86 without native fp16 arithmetic would convert it back at load.)
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult
from bitexport.model.decoder import BitNetDecoder

HEAD_GROUP = 32


def head_weight(model: BitNetDecoder) -> torch.Tensor:
    return model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight


HEAD_FORMATS = ("int4", "int8", "fp32")


def head_label(fmt: str, hidden_size: int) -> str:
    if fmt == "fp32":
        return "fp32"
    if fmt == "int8":
        return "int8-per-row"
    return f"int4-group{HEAD_GROUP}" if hidden_size % HEAD_GROUP == 0 else "int4-per-row"


def quantize_head(model: BitNetDecoder, fmt: str) -> PassResult:
    """Give `model` (in place) a head in `fmt` (one of HEAD_FORMATS)."""
    if fmt == "fp32":
        return PassResult(model, 0)
    if fmt not in HEAD_FORMATS:
        raise ValueError(f"head format {fmt!r} is not one of {', '.join(HEAD_FORMATS)}")
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

    w = head_weight(model).detach()
    vocab, hidden = w.shape
    head = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(w)
    wrapper = nn.Sequential(head)
    if fmt == "int8":
        quantize_(wrapper, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
        model.lm_head = wrapper[0]
        return PassResult(model, 1)
    granularity = PerGroup(HEAD_GROUP) if hidden % HEAD_GROUP == 0 else PerAxis(0)
    quantize_(wrapper, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=granularity))
    with torch.no_grad():
        # XNNPACK keeps int4 block scales in bfloat16: round them here, so that the module computes
        # what the .pte computes (eager PyTorch and ExecuTorch then agree on the head)
        s = wrapper[0].weight.scale
        s.copy_(s.to(torch.bfloat16).float())
    model.lm_head = wrapper[0]  # BitNetDecoder.head() uses lm_head whenever it is set
    return PassResult(model, 1)


def dequantized_head(model: BitNetDecoder) -> torch.Tensor:
    """The float weights the int4 head computes with (for tests and error reports)."""
    w = model.lm_head.weight if model.lm_head is not None else model.embed_tokens.weight
    return w.dequantize() if hasattr(w, "dequantize") else w.detach()
