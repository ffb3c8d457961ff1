"""Weight layouts of com.microsoft.MatMulNBits, spelled out in one place.

MatMulNBits (ORT contrib op) holds a logical weight W [N, K] (N outputs, K inputs) as
  B      uint8 [N, k_blocks, block_size * bits / 8]: quantized values along K, packed lowest bits
         first (value j of a byte sits in bits [bits*j, bits*j + bits));
  scales float [N, k_blocks];
  zero_points: omitted here, so each block's zero point is the default 2^(bits-1).
and computes W[n, k] = (q[n, k] - 2^(bits-1)) * scales[n, k // block_size].

Ternary codes c in {-1, 0, 1} are stored as q = c + 2^(bits-1): exact at 2 bits (q in {1, 2, 3},
zero point 2) and at 4 bits (q in {7, 8, 9}, zero point 8). The default zero point keeps the
file free of zero-point tensors and is on ORT's fast 2-bit path (measured as fast as packed ones).
"""

from __future__ import annotations

import numpy as np

# ORT's int8-activation (accuracy_level 4) 2-bit kernels exist for these block sizes only; 256
# already falls back to the dequantizing path (measured: 11 ms instead of 0.07 ms for 1536x4096).
FAST_BLOCK_SIZES = (128, 64, 32)
# the activation fixed at the end of every K block by the exact-activations form (ops.py): ORT's
# block scale absmax / 127 is then exactly 1 for any block of int8 codes in [-127, 127]
SENTINEL = 127.0


SENTINEL_MAX_GROWTH = 1.15


def sentinel_block_size(k: int) -> int:
    """Block size of the sentinel layout (block_size - 1 inputs + 1 sentinel a block): the largest
    fast block whose layout grows K by at most 15 %, else the one that grows it least. Larger
    blocks first because ORT's 2-bit kernel was measured slower per weight on smaller ones
    (large-shape linears: sentinel form 1.11x the block form's time at block 128, 1.33x at 64,
    1.44x at 32)."""
    def grown(bs: int) -> int:
        return -(-k // (bs - 1)) * bs

    for bs in FAST_BLOCK_SIZES:
        if grown(bs) <= SENTINEL_MAX_GROWTH * k:
            return bs
    return min(FAST_BLOCK_SIZES, key=lambda bs: (grown(bs), -bs))


def with_sentinel_columns(codes: np.ndarray, block_size: int) -> np.ndarray:
    """Codes [N, K] -> [N, k_blocks * block_size] in the sentinel layout: each block holds
    block_size - 1 codes (the last block zero-padded) and a zero code where the sentinel sits."""
    n, k = codes.shape
    per = block_size - 1
    k_blocks = -(-k // per)
    padded = np.zeros((n, k_blocks * per), dtype=codes.dtype)
    padded[:, :k] = codes
    out = np.zeros((n, k_blocks, block_size), dtype=codes.dtype)
    out[:, :, :per] = padded.reshape(n, k_blocks, per)
    return out.reshape(n, -1)


def block_size_for(k: int) -> int:
    """The largest fast block size dividing K (no padded block), else 32 with a padded last block."""
    for bs in FAST_BLOCK_SIZES:
        if k % bs == 0:
            return bs
    return FAST_BLOCK_SIZES[-1]


def pack_bits(q: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """uint8 values q [N, K] (each < 2^bits) -> B [N, k_blocks, block_size*bits/8].

    K is padded to whole blocks with the zero point (a zero weight), so padding adds nothing.
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits bits must be 2, 4 or 8 (got {bits})")
    n, k = q.shape
    k_blocks = -(-k // block_size)
    padded = np.full((n, k_blocks * block_size), 1 << (bits - 1), dtype=np.uint8)
    padded[:, :k] = q
    per_byte = 8 // bits
    v = padded.reshape(n, -1, per_byte)
    out = np.zeros(v.shape[:2], dtype=np.uint8)
    for j in range(per_byte):
        out |= (v[:, :, j] << (bits * j)).astype(np.uint8)
    return out.reshape(n, k_blocks, block_size * bits // 8)


def unpack_bits(b: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of pack_bits: B [N, k_blocks, blob] -> uint8 values [N, K]."""
    n = b.shape[0]
    flat = b.reshape(n, -1)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    vals = np.stack([(flat >> (bits * j)) & mask for j in range(per_byte)], axis=-1)
    return vals.reshape(n, -1)[:, :k].astype(np.uint8)


def pack_ternary(codes: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Ternary codes int8 [N, K] -> B for MatMulNBits with the default zero point (exact)."""
    if codes.min() < -1 or codes.max() > 1:
        raise ValueError("ternary codes must lie in {-1, 0, 1}")
    q = (codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)
    return pack_bits(q, bits, block_size)


def quantize_int4_blockwise(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit blockwise quantization of a float weight [N, K] (lossy: used for the head).

    Per block the value of largest magnitude maps to -8 exactly (scale = that value / -8), which
    uses all 16 levels; the rest round to nearest and clip to [-8, 7]. Returns (B, scales [N, k_blocks]).
    """
    n, k = w.shape
    k_blocks = -(-k // block_size)
    wp = np.zeros((n, k_blocks * block_size), dtype=np.float32)
    wp[:, :k] = w
    blocks = wp.reshape(n, k_blocks, block_size)
    idx = np.abs(blocks).argmax(axis=-1)
    extreme = np.take_along_axis(blocks, idx[..., None], axis=-1)[..., 0]
    scales = (extreme / -8.0).astype(np.float32)
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    q = np.clip(np.rint(blocks / safe), -8, 7).astype(np.int16) + 8
    return pack_bits(q.reshape(n, -1).astype(np.uint8), 4, block_size), scales


def quantize_int8_blockwise(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit blockwise quantization of a float weight [N, K] (the int8 head): scale =
    block absmax / 127, codes round(w / scale) in [-127, 127] stored + 128. Returns (B, scales)."""
    n, k = w.shape
    k_blocks = -(-k // block_size)
    wp = np.zeros((n, k_blocks * block_size), dtype=np.float32)
    wp[:, :k] = w
    blocks = wp.reshape(n, k_blocks, block_size)
    scales = (np.abs(blocks).max(axis=-1) / 127.0).astype(np.float32)
    safe = np.where(scales == 0, 1.0, scales)[..., None]
    q = np.clip(np.rint(blocks / safe), -127, 127).astype(np.int16) + 128
    return pack_bits(q.reshape(n, -1).astype(np.uint8), 8, block_size), scales


def dequantize(b: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """W [N, K] as MatMulNBits sees it (default zero point); `scales` broadcasts per block."""
    n = b.shape[0]
    block_size = b.shape[2] * 8 // bits
    q = unpack_bits(b, bits, b.shape[1] * block_size).astype(np.float32) - (1 << (bits - 1))
    s = np.broadcast_to(np.asarray(scales, dtype=np.float32).reshape(n if np.size(scales) > 1 else 1, -1), (n, b.shape[1]))
    return (q.reshape(n, b.shape[1], block_size) * s[..., None]).reshape(n, -1)[:, :k]
