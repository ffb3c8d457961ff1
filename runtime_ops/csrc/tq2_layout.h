/*
 * tq2: packed ternary weights, 2 bits a weight, for the bitexport::tq2_linear operator.
 *
 * This header is the one C++ statement of the layout; runtime_ops/tq2_layout.py is the Python
 * statement (pack_tq2 / unpack_tq2). tests/runtime_ops/test_runtime_ops.py checks that the two agree bit for
 * bit (the Python packer's bytes feed this file's kernels).
 *
 * Weights
 * -------
 * A linear layer y = x W^T with W of shape [N, K] (N = out_features, K = in_features), every
 * W[n, k] in {-1, 0, +1}, plus one float32 scale per output row (weight_scale[n]).
 *
 * Code
 * ----
 *   code = W[n, k] + 1, so code is 0 (-1), 1 (0) or 2 (+1). Code 3 never appears.
 *
 * Blocks and row groups
 * ---------------------
 *   TQ2_BLOCK_K = 128  weights along K per block, stored in TQ2_BLOCK_BYTES = 32 bytes.
 *   TQ2_GROUP_ROWS = 4 consecutive output rows are interleaved block by block ("row group"), so a
 *   kernel walking one group reads the weights strictly sequentially and loads each activation
 *   chunk once for 4 rows.
 *
 *   KB = ceil(K / 128)          blocks per row
 *   G  = ceil(N / 4)            row groups
 *   packed tensor: uint8, shape [G, KB * 128], contiguous (G * KB * 4 blocks of 32 bytes)
 *
 *   The 32-byte block of row n = 4*g + r (r in 0..3) for K-block b (b in 0..KB-1) starts at
 *       byte offset  g * (KB * 128)  +  b * 128  +  r * 32
 *   i.e. within a row group the order is [block b][row r][32 bytes]; rows r and r+1 of one block
 *   are 64 contiguous bytes (one AVX-512 register), one row's block is 32 bytes (one AVX2 register,
 *   or two NEON registers).
 *
 * Bit order inside a block
 * ------------------------
 *   Byte j (j in 0..31) of the block of row n, K-block b, holds the codes of 4 weights:
 *       bits 0-1 (value & 3)        -> k = b*128 +  0 + j
 *       bits 2-3 ((value >> 2) & 3) -> k = b*128 + 32 + j
 *       bits 4-5 ((value >> 4) & 3) -> k = b*128 + 64 + j
 *       bits 6-7 ((value >> 6) & 3) -> k = b*128 + 96 + j
 *   so one 32-byte load, shifted by 2*q and masked with 3, gives the 32 codes of weights
 *   k = b*128 + 32*q .. b*128 + 32*q + 31, aligned with 32 consecutive activations.
 *   (In general: weight k of a block sits in byte k % 32 at bits 2*(k / 32), 2*(k / 32) + 1.)
 *
 * Padding
 * -------
 *   k >= K (the tail of the last block) and rows n >= N (the tail of the last group) hold code 1
 *   (weight 0), so they add nothing to any dot product. Kernels may read them; outputs for
 *   n >= N are never written.
 *
 * Scales
 * ------
 *   weight_scale: float32 [N], a separate tensor (not inside the packed bytes), one per output
 *   row, so a fused q/k/v or gate/up matrix keeps each part's per-tensor scale.
 *
 * Size: 2 bits a weight plus 32/K bits for the scale plus the padding, e.g. 2.021 bits a weight
 * for K = 1536, N = 4096.
 *
 * Arithmetic (W1.58A8, BitNet b1.58), identical in the Python reference and every kernel:
 *   per token (a row of x, float32, K values):
 *     m   = max(max_k |x[k]|, 1e-5f)
 *     s   = 127.0f / m                                   (float32 division)
 *     xq  = clamp(round_half_to_even(x[k] * s), -128, 127)   (float32 multiply, then nearbyintf)
 *     acc = sum_k xq[k] * W[n, k]                       (exact, int32)
 *     y[n] = ((float)acc / s) * weight_scale[n]         (float32, this order, no FMA)
 *   The SIMD kernels compute sum_k xq[k] * code[n, k] - sum_k xq[k], which equals acc exactly.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitexport {
namespace tq2 {

constexpr int64_t TQ2_BLOCK_K = 128;     // weights along K in one block
constexpr int64_t TQ2_BLOCK_BYTES = 32;  // bytes in one block (2 bits a weight)
constexpr int64_t TQ2_GROUP_ROWS = 4;    // rows interleaved in one row group
constexpr uint8_t TQ2_PAD_CODE = 1;      // code of weight 0, used for padding

// Blocks per row for K weights along the reduction dimension.
inline constexpr int64_t blocks_per_row(int64_t k) {
  return (k + TQ2_BLOCK_K - 1) / TQ2_BLOCK_K;
}

// Row groups for N output rows.
inline constexpr int64_t row_groups(int64_t n) {
  return (n + TQ2_GROUP_ROWS - 1) / TQ2_GROUP_ROWS;
}

// Bytes in one packed row of the [G, KB * 128] tensor (one row group).
inline constexpr int64_t group_bytes(int64_t k) {
  return blocks_per_row(k) * TQ2_BLOCK_BYTES * TQ2_GROUP_ROWS;
}

// Byte offset of the 32-byte block of row n, K-block b.
inline constexpr int64_t block_offset(int64_t n, int64_t b, int64_t k) {
  return (n / TQ2_GROUP_ROWS) * group_bytes(k) + b * TQ2_BLOCK_BYTES * TQ2_GROUP_ROWS +
      (n % TQ2_GROUP_ROWS) * TQ2_BLOCK_BYTES;
}

// Code (0, 1 or 2) of weight (n, k) in a packed tensor for in_features = k_total.
inline uint8_t code_at(const uint8_t* packed, int64_t n, int64_t k, int64_t k_total) {
  const int64_t b = k / TQ2_BLOCK_K;
  const int64_t within = k % TQ2_BLOCK_K;
  const uint8_t byte = packed[block_offset(n, b, k_total) + within % TQ2_BLOCK_BYTES];
  return static_cast<uint8_t>((byte >> (2 * (within / TQ2_BLOCK_BYTES))) & 3);
}

} // namespace tq2
} // namespace bitexport
