"""What a checkpoint must not hold, checked once for every format: tensors the architecture has no
place for, and values no trained BitNet has. Each refusal names the tensor.

NaN and inf in any floating tensor are refused where every tensor is read (`TensorTable.take`).
"""

from __future__ import annotations

import re

import torch

from bitexport.errors import InputError
from bitexport.formats.folder import TensorTable
from bitexport.model.quant import absmean_ternarize

# Tensors a checkpoint may hold that no architecture reads: rotary inverse frequencies, which
# older transformers saved as persistent buffers and which are recomputed from rope_theta.
HARMLESS_EXTRAS = (
    re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"),
    re.compile(r"model\.rotary_emb\.inv_freq"),
)
UNUSED_LISTED = 5


def refuse_unused(table: TensorTable) -> None:
    """A tensor nobody read is a part of the network we would silently drop: refuse it."""
    extra = [n for n in table.unused() if not any(p.fullmatch(n) for p in HARMLESS_EXTRAS)]
    if not extra:
        return
    listed = ", ".join(repr(n) for n in extra[:UNUSED_LISTED])
    more = f" and {len(extra) - UNUSED_LISTED} more" if len(extra) > UNUSED_LISTED else ""
    raise InputError(
        f"{table.source}: {len(extra)} tensor(s) that {table.described_by}'s architecture does not use: {listed}{more}; "
        f"bitexport would drop them and compute a different network: use a checkpoint whose {table.described_by} "
        "describes all of its weights"
    )


def tied_copy_of_embedding(table: TensorTable, emb: torch.Tensor) -> None:
    # Some writers store the tied head anyway; it is harmless only if it is the embedding.
    head = table.take("lm_head.weight", tuple(emb.shape))
    if not torch.equal(head, emb):
        raise InputError(
            f"{table.source}: tensor 'lm_head.weight' differs from the embedding though {table.described_by} says "
            f"tie_word_embeddings=true; set tie_word_embeddings to false in {table.described_by}"
        )


def ternarize_shadow(table: TensorTable, name: str, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """absmean ternarization of a full-precision shadow weight that must not be all zeros (its
    gamma would be 0: the layer would be dead, which no trained checkpoint holds)."""
    if not bool(w.any()):
        raise InputError(
            f"{table.source}: tensor {name!r} is all zeros (ternary scale 0); the checkpoint is damaged, "
            "download or export it again"
        )
    return absmean_ternarize(w)


def positive_scale(table: TensorTable, name: str, scale: torch.Tensor) -> None:
    """Both `bitnet` conventions (codes / scale, codes * scale) need a scale > 0: 0 makes a layer
    dead or infinite, a negative one flips every weight's sign."""
    if not float(scale.reshape(-1)[0]) > 0:
        raise InputError(
            f"{table.source}: tensor {name!r} is {float(scale.reshape(-1)[0])}, not a positive number; "
            "the checkpoint is damaged, download or export it again"
        )
