"""Quantizers for the two tables that are not ternary (embedding and output head), in numpy, so
that every target stores the same codes and the tests have one reference to compare with.

- int8 per row: scale = max|row| / 127, code = clip(round(w / scale), -127, 127).
- int4 per group of `group` values along the row: the value of largest magnitude maps to -8
  exactly (scale = that value / -8, so all 16 levels are used), code = clip(round(w / scale), -8, 7).
  The scale is rounded to the target's scale dtype *before* the codes are computed, so a stored
  table dequantizes to codes x stored scale and nothing else.

`dequantize_*` give what a runtime reads back: float32(code) x float32(scale).
"""

from __future__ import annotations

import numpy as np

INT4_GROUP = 32  # the head's group too: the finest group the runtimes' fast paths take


def quantize_rows_int8(w: np.ndarray, scale_dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [V, H], scales [V] in scale_dtype) of a float table [V, H]."""
    w = np.asarray(w, dtype=np.float32)
    scales = (np.abs(w).max(axis=1) / np.float32(127.0)).astype(scale_dtype)
    safe = np.where(scales == 0, 1, scales).astype(np.float32)[:, None]
    codes = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)
    return codes, scales


def quantize_groups_int4(w: np.ndarray, group: int = INT4_GROUP, scale_dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [V, H] in [-8, 7], scales [V, H / group] in scale_dtype) of a float table [V, H];
    H must be a multiple of `group`."""
    w = np.asarray(w, dtype=np.float32)
    v, h = w.shape
    if h % group:
        raise ValueError(f"int4 groups of {group} need a row length that {group} divides (got {h})")
    blocks = w.reshape(v, h // group, group)
    idx = np.abs(blocks).argmax(axis=-1)
    extreme = np.take_along_axis(blocks, idx[..., None], axis=-1)[..., 0]
    scales = (extreme / np.float32(-8.0)).astype(scale_dtype)
    safe = np.where(scales == 0, 1, scales).astype(np.float32)[..., None]
    codes = np.clip(np.rint(blocks / safe), -8, 7).astype(np.int8)
    return codes.reshape(v, h), scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * np.asarray(scales, dtype=np.float32).reshape(-1, 1)


def dequantize_groups(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    v, h = codes.shape
    s = np.asarray(scales, dtype=np.float32)
    group = h // s.shape[1]
    return (codes.astype(np.float32).reshape(v, -1, group) * s[..., None]).reshape(v, h)


def pack_nibbles_high_first(codes: np.ndarray) -> np.ndarray:
    """int4 codes [V, H] -> uint8 [V, H / 2]: element 2i in the high nibble, 2i + 1 in the low
    one, each stored + 8 (ExecuTorch's quantized_decomposed::embedding_4bit layout)."""
    u = (codes.astype(np.int16) + 8).astype(np.uint8)
    return ((u[:, 0::2] << 4) | u[:, 1::2]).astype(np.uint8)


def unpack_nibbles_high_first(packed: np.ndarray) -> np.ndarray:
    hi = (packed >> 4).astype(np.int16) - 8
    lo = (packed & 0xF).astype(np.int16) - 8
    return np.stack([hi, lo], axis=-1).reshape(packed.shape[0], -1).astype(np.int8)
