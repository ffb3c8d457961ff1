"""The model the recipe trains: BitNetDecoder in training mode, ternary or full precision."""

from __future__ import annotations

import torch
from torch import nn

from bitexport.model.config import ModelConfig
from bitexport.model.bitlinear import BitLinear
from bitexport.model.decoder import BitNetDecoder

INIT_STD = 0.02


def build_model(cfg: ModelConfig, max_seq_len: int, full_precision: bool = False) -> BitNetDecoder:
    """A trainable decoder. `full_precision` swaps every BitLinear for a bias-free nn.Linear:
    the same shape, names and initialisation, with no weight or activation quantization, so the
    comparison isolates the effect of ternary weights and int8 activations."""
    model = BitNetDecoder(cfg, max_seq_len, trainable=True)
    with torch.no_grad():
        # nn.Embedding's default N(0, 1) would give tied output logits of size ~sqrt(hidden)
        nn.init.normal_(model.embed_tokens.weight, std=INIT_STD)
        if model.lm_head is not None:
            nn.init.normal_(model.lm_head.weight, std=INIT_STD)
    if full_precision:
        for name, lin in model.bitlinears():
            parent_name, _, attr = name.rpartition(".")
            dense = nn.Linear(lin.in_features, lin.out_features, bias=False)
            with torch.no_grad():
                dense.weight.copy_(lin.weight)
            setattr(model.get_submodule(parent_name), attr, dense)
    return model


def is_ternary(model: BitNetDecoder) -> bool:
    return any(isinstance(m, BitLinear) for m in model.modules())


class LossModule(nn.Module):
    """forward(tokens [b, n+1]) -> mean next-token cross-entropy. DistributedDataParallel wraps
    this (it hooks `forward`, and the decoder's training entry point is `forward_train`)."""

    def __init__(self, decoder: BitNetDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.decoder.forward_train(tokens[:, :-1])
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
