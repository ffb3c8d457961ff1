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
constexpr int TQ2_CODE_BITS = 2;         // bits of one code
constexpr uint8_t TQ2_CODE_MASK = 3;     // (byte >> (TQ2_CODE_BITS * q)) & TQ2_CODE_MASK
// Codes per byte = 32-weight chunks per block: byte j of a block holds chunk q's weight j.
constexpr int TQ2_CHUNKS = 8 / TQ2_CODE_BITS;
constexpr int64_t TQ2_CHUNK_K = TQ2_BLOCK_BYTES;  // weights in one chunk (one per block byte)
// Bytes of one K-block of a whole row group (4 rows x 32 bytes): the stride along K in a group.
constexpr int64_t TQ2_GROUP_BLOCK_BYTES = TQ2_BLOCK_BYTES * TQ2_GROUP_ROWS;

// The same layout as types, for code that wants names instead of offsets. A row group of the
// packed tensor is an array of KB Tq2GroupBlock; the kernels walk it through byte pointers with
// the constants above, and these asserts tie the two descriptions together.
struct Tq2Block {
  uint8_t bytes[TQ2_BLOCK_BYTES];  // byte j: chunk q's weight j at bits [2q+1:2q]
};
struct Tq2GroupBlock {
  Tq2Block rows[TQ2_GROUP_ROWS];  // [row r of the group][32 bytes], rows in order
};
static_assert(TQ2_CHUNKS * TQ2_CHUNK_K == TQ2_BLOCK_K, "a block is its chunks");
static_assert(TQ2_BLOCK_BYTES * 8 == TQ2_BLOCK_K * TQ2_CODE_BITS, "2 bits a weight, no gaps");
static_assert(sizeof(Tq2Block) == TQ2_BLOCK_BYTES, "no padding inside a block");
static_assert(alignof(Tq2Block) == 1, "blocks sit at any byte offset of the tensor");
static_assert(sizeof(Tq2GroupBlock) == TQ2_GROUP_BLOCK_BYTES, "rows of a group block are contiguous");
static_assert(offsetof(Tq2GroupBlock, rows) == 0, "row 0 first");
static_assert(sizeof(Tq2GroupBlock::rows[0]) == TQ2_BLOCK_BYTES, "row r at byte r * 32");
static_assert(((TQ2_PAD_CODE << 6) | (TQ2_PAD_CODE << 4) | (TQ2_PAD_CODE << 2) | TQ2_PAD_CODE) == 0x55,
              "a padding byte is 0x55");

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
  return blocks_per_row(k) * TQ2_GROUP_BLOCK_BYTES;
}

// Byte offset of the 32-byte block of row n, K-block b.
inline constexpr int64_t block_offset(int64_t n, int64_t b, int64_t k) {
  return (n / TQ2_GROUP_ROWS) * group_bytes(k) + b * TQ2_GROUP_BLOCK_BYTES +
      (n % TQ2_GROUP_ROWS) * TQ2_BLOCK_BYTES;
}

// Code (0, 1 or 2) of weight (n, k) in a packed tensor for in_features = k_total.
inline uint8_t code_at(const uint8_t* packed, int64_t n, int64_t k, int64_t k_total) {
  const int64_t b = k / TQ2_BLOCK_K;
  const int64_t within = k % TQ2_BLOCK_K;
  const uint8_t byte = packed[block_offset(n, b, k_total) + within % TQ2_CHUNK_K];
  return static_cast<uint8_t>((byte >> (TQ2_CODE_BITS * (within / TQ2_CHUNK_K))) & TQ2_CODE_MASK);
}

} // namespace tq2
} // namespace bitexport
