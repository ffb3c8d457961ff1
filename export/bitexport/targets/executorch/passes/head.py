"""Pass: the output head in int4 groupwise (ExportOptions.head == "int4") or kept in float32.

int4: torchao int4 weights, group 32 (per row where hidden_size is not a multiple of 32), int8
dynamic activations, the layout XNNPACK runs on a stock runtime. The head is not ternary, so this
is lossy (random Gaussian heads: ~7 % rms weight error per group); tests compare it with a
reference holding the same dequantized weights. A tied head gets its own int4 copy: the embedding
table keeps its own format (et_embedding), since a lookup cannot read XNNPACK's packed weights.
"""

from __future__ import annotations

import torch
from torch import nn

from bitexport.targets.executorch.passes.ternary import PassResult
from bitexport.model.decoder import BitNetDecoder

HEAD_GROUP = 32


def head_weight(model: BitNetDecoder) -> torch.Tensor:
    return model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight


def head_label(fmt: str, hidden_size: int) -> str:
    if fmt == "fp32":
        return "fp32"
    return f"int4-group{HEAD_GROUP}" if hidden_size % HEAD_GROUP == 0 else "int4-per-row"


def quantize_head(model: BitNetDecoder, fmt: str) -> PassResult:
    """Give `model` (in place) a head in `fmt` ("int4" or "fp32")."""
    if fmt == "fp32":
        return PassResult(model, 0)
    if fmt != "int4":
        raise ValueError(f"head format {fmt!r} is not int4 or fp32")
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

    w = head_weight(model).detach()
    vocab, hidden = w.shape
    head = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(w)
    granularity = PerGroup(HEAD_GROUP) if hidden % HEAD_GROUP == 0 else PerAxis(0)
    wrapper = nn.Sequential(head)
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
