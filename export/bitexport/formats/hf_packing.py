"""The 2-bit packing of transformers' `bitnet` checkpoints (BitNetForCausalLM).

A linear W [out, in] with values in {-1, 0, 1} is stored as uint8 [R, in], R = ceil(out / 4):
bits [2i+1:2i] of packed[r, c] hold W[i*R + r, c] + 1, i = 0 in the low bits. Rows past `out`
(when out is not a multiple of 4) are stored as code 1 (weight 0).
"""

from __future__ import annotations

import torch

VALUES_PER_BYTE = 4


def pack_rows(codes: torch.Tensor) -> torch.Tensor:
    out, k = codes.shape
    r = -(-out // VALUES_PER_BYTE)
    padded = torch.ones(r * VALUES_PER_BYTE, k, dtype=torch.uint8)
    padded[:out] = (codes.to(torch.int16) + 1).to(torch.uint8)
    packed = torch.zeros(r, k, dtype=torch.uint8)
    for i in range(VALUES_PER_BYTE):
        packed |= padded[i * r : (i + 1) * r] << (2 * i)
    return packed


def unpack_rows(packed: torch.Tensor, out: int) -> torch.Tensor:
    """int8 codes [out, in]; raises ValueError on a 2-bit value of 3 (not a ternary code)."""
    p = packed.to(torch.uint8)
    parts = [(p >> (2 * i)) & 3 for i in range(VALUES_PER_BYTE)]
    u = torch.cat(parts, dim=0)[:out]
    if bool((u == 3).any()):
        raise ValueError("packed weight holds the 2-bit value 3, which is no ternary code")
    return u.to(torch.int8) - 1
