"""llama.cpp's ternary block formats, TQ2_0 and TQ1_0, decoded into codes and block scales.

Both hold 256 weights of one row a block, followed by the block's scale `d` (fp16); a weight is
`d * code`, code in {-1, 0, 1}, stored as the trit `code + 1`. Layouts (ggml-common.h's
block_tq2_0 / block_tq1_0, as ggml's reference (de)quantizers and gguf-py's read them):

- TQ2_0, 66 bytes: qs[64], d. Weight j = 128a + 32b + c (a < 2, b < 4, c < 32) is the 2-bit
  field at bit 2b of qs[32a + c]. The field value 3 is no trit: a corrupt block.
- TQ1_0, 54 bytes: qs[48], qh[4], d. Five trits a byte (four in qh) as a base-3 fraction of 256:
  byte = ceil(v * 256 / 243), v = 81 t0 + 27 t1 + 9 t2 + 3 t3 + t4, and trit n comes back as
  ((byte * 3^n) mod 256) * 3 >> 8. Weights 0..159 are qs[0:32] (j = 32n + m), 160..239 qs[32:48]
  (j = 160 + 16n + m), 240..255 qh (j = 240 + 4n + m, four trits, t4 = 0). Only 243 of the 256 byte
  values (81 in qh) are encodings: any other is a corrupt block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 256
BLOCK_BYTES = {"TQ2_0": 66, "TQ1_0": 54}


@dataclass(frozen=True)
class Decoded:
    """codes: int8 [rows, blocks * 256]; d: fp16 [rows, blocks]; bad: the first corrupt block's
    (row, block), or None."""

    codes: np.ndarray
    d: np.ndarray
    bad: tuple[int, int] | None


def decode(kind: str, raw: np.ndarray) -> Decoded:
    """Decode uint8 [rows, blocks * BLOCK_BYTES[kind]] (one row of a matrix a row)."""
    nbytes = BLOCK_BYTES[kind]
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, -1, nbytes)
    d = blocks[..., nbytes - 2 :].copy().view(np.float16)[..., 0]
    trits, bad_mask = (_tq2 if kind == "TQ2_0" else _tq1)(blocks[..., : nbytes - 2])
    codes = (trits.astype(np.int8) - 1).reshape(rows, -1)
    bad = None
    if bad_mask.any():
        r, b = np.argwhere(bad_mask)[0]
        bad = (int(r), int(b))
    return Decoded(codes, d, bad)


def _tq2(qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, nb, _ = qs.shape
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    # (rows, blocks, a, b, c): the order of j = 128a + 32b + c
    fields = (qs.reshape(rows, nb, 2, 1, 32) >> shifts) & 3
    bad = (fields == 3).reshape(rows, nb, -1).any(axis=-1)
    return fields.reshape(rows, nb, BLOCK), bad


_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)


def _trits(byte: np.ndarray, count: int) -> np.ndarray:
    """(..., width) bytes -> (..., count, width) trits: ((byte * 3^n) mod 256) * 3 >> 8."""
    x = byte[..., None, :].astype(np.uint16)
    return ((((x * _POW3[:count, None]) & 0xFF) * 3) >> 8).astype(np.uint8)


def _encoded(trits: np.ndarray) -> np.ndarray:
    """The byte the encoder writes for (..., 5, width) trits (t0 most significant)."""
    v = (trits.astype(np.uint16) * _POW3[::-1, None]).sum(axis=-2)
    return ((v * 256 + 242) // 243).astype(np.uint8)


def _tq1(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, nb, _ = packed.shape
    qs0, qs1, qh = packed[..., :32], packed[..., 32:48], packed[..., 48:52]
    t0, t1, t4 = _trits(qs0, 5), _trits(qs1, 5), _trits(qh, 4)
    full_qh = np.concatenate([t4, np.zeros_like(t4[..., :1, :])], axis=-2)
    bad = (
        (_encoded(t0) != qs0).any(axis=-1)
        | (_encoded(t1) != qs1).any(axis=-1)
        | (_encoded(full_qh) != qh).any(axis=-1)
    )
    trits = np.concatenate([t0.reshape(rows, nb, -1), t1.reshape(rows, nb, -1), t4.reshape(rows, nb, -1)], axis=-1)
    return trits, bad
