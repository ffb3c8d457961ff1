"""tq2: ternary weights packed 2 bits each, for ``bitexport::tq2_linear``.

The C++ statement of the same layout is ``runtime_ops/csrc/tq2_layout.h``; keep the two in step
(tests/runtime_ops/test_runtime_ops.py feeds this packer's bytes to the C++ kernels and checks bit equality).

Weights ``W`` ``[N, K]`` (N = out_features, K = in_features), each in {-1, 0, +1}:

* code = W + 1, so 0, 1 or 2 (3 never appears).
* Blocks of ``BLOCK_K = 128`` weights along K, ``BLOCK_BYTES = 32`` bytes each.
  ``KB = ceil(K / 128)`` blocks a row; the tail k >= K is padded with code 1 (weight 0).
* Row groups of ``GROUP_ROWS = 4`` consecutive rows, ``G = ceil(N / 4)``; rows n >= N are padded
  with code 1.
* Packed tensor: uint8 ``[G, KB * 128]``. Inside a row group the order is
  ``[block b][row r][32 bytes]``: the block of row ``n = 4*g + r``, K-block ``b`` starts at byte
  ``g*KB*128 + b*128 + r*32`` of the flattened tensor.
* Byte ``j`` (0..31) of a block holds weights ``k = b*128 + 32*q + j`` for q = 0..3 in bits
  ``2q, 2q+1`` (q = 0 in the lowest two bits).
* ``weight_scale``: float32 ``[N]``, a separate tensor, one scale per output row.

Size: 2 bits a weight + 32 bits a row for the scale + padding (``bits_per_weight``).
"""

from __future__ import annotations

import torch

BLOCK_K = 128
BLOCK_BYTES = 32
GROUP_ROWS = 4
PAD_CODE = 1


def blocks_per_row(k: int) -> int:
    return (k + BLOCK_K - 1) // BLOCK_K


def row_groups(n: int) -> int:
    return (n + GROUP_ROWS - 1) // GROUP_ROWS


def packed_shape(n: int, k: int) -> tuple[int, int]:
    """Shape of the packed uint8 tensor for a [n, k] weight."""
    return (row_groups(n), blocks_per_row(k) * BLOCK_BYTES * GROUP_ROWS)


def bits_per_weight(n: int, k: int) -> float:
    """Stored bits per weight, packed codes plus one float32 scale a row, padding included."""
    g, width = packed_shape(n, k)
    return (g * width * 8 + n * 32) / (n * k)


def pack_tq2(codes: torch.Tensor) -> torch.Tensor:
    """Packs ternary weights ``codes`` (int8 [N, K], values in {-1, 0, 1}) into tq2 bytes.

    Returns a contiguous uint8 tensor of shape ``packed_shape(N, K)``.
    """
    if codes.dim() != 2:
        raise ValueError(f"pack_tq2 expects a 2-D [N, K] tensor, got shape {tuple(codes.shape)}")
    n, k = codes.shape
    if n < 1 or k < 1:
        raise ValueError(f"pack_tq2 expects N >= 1 and K >= 1, got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"pack_tq2 expects integer codes in {{-1, 0, 1}}, got dtype {codes.dtype}")
    c = codes.detach().to("cpu", torch.int16)
    if bool(((c < -1) | (c > 1)).any()):
        raise ValueError("pack_tq2 expects values in {-1, 0, 1}")
    g, width = packed_shape(n, k)
    kb = blocks_per_row(k)
    full = torch.full((g * GROUP_ROWS, kb * BLOCK_K), PAD_CODE, dtype=torch.uint8)
    full[:n, :k] = (c + 1).to(torch.uint8)
    # [G, r, KB, q, j]  with row = 4*G + r and k = b*128 + 32*q + j
    v = full.view(g, GROUP_ROWS, kb, 4, BLOCK_BYTES)
    byte = v[:, :, :, 0] | (v[:, :, :, 1] << 2) | (v[:, :, :, 2] << 4) | (v[:, :, :, 3] << 6)
    # [G, r, KB, j] -> [G, KB, r, j]
    return byte.permute(0, 2, 1, 3).contiguous().view(g, width)


def unpack_tq2(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of ``pack_tq2``: int8 codes [n, k] in {-1, 0, 1}."""
    expected = packed_shape(n, k)
    if packed.dtype != torch.uint8 or tuple(packed.shape) != expected:
        raise ValueError(
            f"unpack_tq2 expects uint8 {expected} for n={n}, k={k}, "
            f"got {packed.dtype} {tuple(packed.shape)}"
        )
    g, _ = expected
    kb = blocks_per_row(k)
    byte = packed.detach().to("cpu").view(g, kb, GROUP_ROWS, BLOCK_BYTES).permute(0, 2, 1, 3)
    parts = [(byte >> (2 * q)) & 3 for q in range(4)]
    v = torch.stack(parts, dim=3)  # [G, r, KB, q, j]
    full = v.reshape(g * GROUP_ROWS, kb * BLOCK_K)
    return (full[:n, :k].to(torch.int8) - 1).contiguous()
