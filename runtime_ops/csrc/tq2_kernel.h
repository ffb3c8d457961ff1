/*
 * The tq2 linear kernel: y[M, N] = tq2_linear(x[M, K], packed, weight_scale).
 * Layout and arithmetic: tq2_layout.h. Plain C++ interface, no ExecuTorch types, so the same code
 * serves the ExecuTorch operator (tq2_op_executorch.cpp) and the C entry points (tq2_c_api.cpp).
 */
#pragma once

#include <cmath>
#include <cstdint>

#include "tq2_layout.h"

namespace bitexport {
namespace tq2 {

// Instruction-set paths. Two ladders, each in increasing order of preference:
//   x86-64:  portable < avx2 < avx512vnni
//   aarch64: portable < neon < neon_dotprod < neon_i8mm
enum class Isa : int {
  kPortable = 0,     // plain C++, any CPU
  kAvx2 = 1,         // x86-64 AVX2 (vpmaddubsw)
  kAvx512Vnni = 2,   // x86-64 AVX-512 F/BW/VL + VNNI (vpdpbusd)
  kNeon = 3,         // aarch64 Advanced SIMD, every Armv8-A core (smull/smlal, sadalp)
  kNeonDotprod = 4,  // aarch64 + FEAT_DotProd (sdot)
  kNeonI8mm = 5,     // aarch64 + FEAT_DotProd + FEAT_I8MM (smmla for several tokens, sdot for one)
};

// "portable", "avx2", "avx512vnni", "neon", "neon_dotprod", "neon_i8mm".
const char* isa_name(Isa isa);

// The path of that name (not "auto"); false for an unknown name.
bool parse_isa(const char* name, Isa* isa);

// Whether this CPU (and this build) can run the path (CPUID / HWCAP / sysctl, checked once).
bool isa_supported(Isa isa);

// Best path this CPU supports.
Isa best_supported_isa();

// Path the next call will use: BITEXPORT_TQ2_ISA (a name above or auto, read on every call)
// capped at what the CPU supports: a path it lacks steps down its own ladder to the best one it
// has (avx512vnni on an AVX2-only CPU gives avx2, neon_i8mm on a dotprod-only core gives
// neon_dotprod), so a path of the other architecture ends at portable. Unset, "auto" or an
// unknown name means the best supported one.
Isa selected_isa();

// Largest in_features the kernels accept: every int32 accumulator stays exact below it.
constexpr int64_t kMaxK = int64_t{1} << 20;

struct Tq2Problem {
  const float* x;        // [m, k] row-major
  const uint8_t* packed; // [row_groups(n), group_bytes(k)]
  const float* scale;    // [n]
  float* y;              // [m, n] row-major
  int64_t m;
  int64_t k;
  int64_t n;
};

// Computes the whole problem with the given path, spread over the ExecuTorch thread pool.
// Requires 1 <= k <= kMaxK and an isa this CPU supports (callers check).
void tq2_linear_f32(const Tq2Problem& p, Isa isa);

namespace detail {

// Quantized activations of the m tokens: xq [m, kp] (kp = blocks_per_row(k) * 128, zero padded),
// one scale s and one sum(xq) per token.
struct QuantizedActs {
  const int8_t* xq;
  const float* s;
  const int32_t* xsum;
  int64_t m;
  int64_t kp;
  // neon_i8mm with m >= 2 only, else null: the tokens again, paired for smmla (its operand is
  // a 2x8 matrix): [ceil(m/2)][kp/8][2][8], i.e. pair p, K-chunk c of 8 holds xq[2p][8c..8c+7]
  // then xq[2p+1][8c..8c+7] (zeros for the missing partner of an odd m).
  const int8_t* xq_pairs = nullptr;
};

// Per-token quantization (tq2_layout.h) of x[m, k] into xq[m, kp], s[m], xsum[m].
using QuantizeFn = void (*)(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq,
                            float* s, int32_t* xsum);

void quantize_portable(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                       int32_t* xsum);

// Computes output rows of row groups [g0, g1) for all tokens.
using GroupsFn = void (*)(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                          float* y, int64_t n, int64_t g0, int64_t g1);

void groups_portable(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                     int64_t n, int64_t g0, int64_t g1);

// ---------------------------------------------------------------- token-blocked GEMM (m >= 2)
//
// The x86 prefill paths split y[M, N] into tiles of rows x up to kGemmTokens tokens. A tile
// function computes one tile over a run of K-blocks, unpacking each weight block once for all
// the tile's tokens; gemm_task (tq2_kernel.cpp) walks one task of the 2-D grid (a row block x a
// token block), K in chunks of at most kGemmMaxChunkBlocks blocks so that the tile's activations
// (8 tokens x 15 blocks = 15 KiB) stay in L1 while the row block's weights stream past them.

constexpr int kGemmTokens = 8;
// AVX2 sums the four chunk products of a block in int16: per block a lane gains at most
// 4 * 2 * 2 * 128 = 2048 in magnitude, so 15 blocks stay below 32767 (tq2_kernel_x86.cpp).
constexpr int64_t kGemmMaxChunkBlocks = 15;

// Adds the dots of rows [0, R) of the tile (w: the first row's block, rows 32 bytes apart as
// in a row group, K-blocks TQ2_GROUP_BLOCK_BYTES apart) x `tokens` tokens (x: the first token's
// activations at the same K-block, tokens x_stride bytes apart) over nb <= kGemmMaxChunkBlocks
// blocks into acc[r * kGemmTokens + t] (sum of xq * code). R is the function's own rows_per_tile.
using GemmTileFn = void (*)(const uint8_t* w, int64_t nb, const int8_t* x, int64_t x_stride,
                            int tokens, int32_t* acc);

struct GemmKernel {
  GemmTileFn tile;
  int rows_per_tile;  // divides TQ2_GROUP_ROWS
};

// The task of the grid computing row groups [g0, g1) (at most kGemmRowBlockGroups of them) for
// tokens [t0, t1), all K; writes y.
constexpr int64_t kGemmRowBlockGroups = 16;
void gemm_task(const GemmKernel& kernel, const QuantizedActs& a, const uint8_t* packed,
               const float* scale, float* y, int64_t n, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1);

#if defined(__x86_64__)
GemmKernel gemm_kernel_avx2();
GemmKernel gemm_kernel_avx512vnni();
void quantize_avx2(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                   int32_t* xsum);
void groups_avx2(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                 int64_t n, int64_t g0, int64_t g1);
void groups_avx512vnni(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                       int64_t n, int64_t g0, int64_t g1);
bool cpu_has_avx2();
bool cpu_has_avx512vnni();
#endif

#if defined(__aarch64__)
// tq2_kernel_arm.cpp. The dotprod and i8mm functions carry their own target attributes; the
// file builds for baseline Armv8-A and tq2_kernel.cpp calls them only after the CPU said yes.
void quantize_neon(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                   int32_t* xsum);
// Fills QuantizedActs::xq_pairs (size pair_bytes(m, kp)) from xq.
void pair_tokens_neon(const int8_t* xq, int64_t m, int64_t kp, int8_t* pairs);
inline int64_t pair_bytes(int64_t m, int64_t kp) {
  return (m + 1) / 2 * 2 * kp;
}
void groups_neon(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                 int64_t n, int64_t g0, int64_t g1);
void groups_neon_dotprod(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                         float* y, int64_t n, int64_t g0, int64_t g1);
void groups_neon_i8mm(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                      int64_t n, int64_t g0, int64_t g1);
bool cpu_has_neon_dotprod();
bool cpu_has_neon_i8mm();
#endif

// The scalar quantizer every path shares (the whole row in the portable path, the tail past the
// last full vector in the SIMD ones): xq = clamp(round_half_even(x * s), -128, 127) for
// k in [begin, end), zeros up to kp; returns the sum of the codes written.
inline int32_t quantize_scalar(const float* xr, float st, int8_t* qr, int64_t begin, int64_t end, int64_t kp) {
  int32_t sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    const float prod = xr[i] * st;
    float v = std::nearbyint(prod);
    v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
    const int32_t q = v == v ? static_cast<int32_t>(v) : 0;  // NaN input: 0, never UB
    qr[i] = static_cast<int8_t>(q);
    sum += q;
  }
  for (int64_t i = end; i < kp; ++i) {
    qr[i] = 0;
  }
  return sum;
}

// The output step shared by every path: y = ((float)acc / s) * scale, written so that no
// compiler contracts it (the sources are also built with -ffp-contract=off).
inline float dequant(int32_t acc, float s, float scale) {
  const float a = static_cast<float>(acc) / s;
  return a * scale;
}

// Output of the SIMD paths for tokens [t0, t0 + tcount) of row group g: dots[t][r] is
// sum(xq * code) of that token and row, so the weight sum is dots - xsum (tq2_layout.h).
// Rows past n are padding and never written.
inline void write_group(const QuantizedActs& a, const float* scale, float* y, int64_t n, int64_t g,
                        int64_t t0, int tcount, const int32_t (*dots)[TQ2_GROUP_ROWS]) {
  for (int t = 0; t < tcount; ++t) {
    const int64_t tok = t0 + t;
    for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
      const int64_t row = g * TQ2_GROUP_ROWS + r;
      if (row < n) {
        y[tok * n + row] = dequant(dots[t][r] - a.xsum[tok], a.s[tok], scale[row]);
      }
    }
  }
}

} // namespace detail
} // namespace tq2
} // namespace bitexport
