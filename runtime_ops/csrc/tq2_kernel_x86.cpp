/*
 * tq2 linear, x86-64 paths: AVX2 and AVX-512 VNNI. Each function carries its own target
 * attribute, so this file is compiled with the project's baseline flags (no -mavx2) and nothing
 * here leaks wider instructions into code the portable path shares. tq2_kernel.cpp calls these
 * only after CPUID said yes. Layout: tq2_layout.h.
 */
#if defined(__x86_64__)

#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "tq2_kernel.h"
#include "tq2_layout.h"

// GCC 12's AVX-512 headers build 256-bit halves from _mm256_undefined_*(), which its own
// -Wuninitialized then reports at every inlined use (a known false positive, like the
// -Wmaybe-uninitialized one the CMake file silences).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define BX_AVX2 __attribute__((target("avx2")))
#define BX_AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline
#define BX_VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#define BX_VNNI_INLINE \
  __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) inline

namespace bitexport {
namespace tq2 {
namespace detail {
// Software prefetch distance along the weight stream. Measured on a 2-core Xeon VM with the
// weights in DRAM: +30-60% GB/s per thread at 2-4 KiB ahead (the hardware prefetcher alone
// keeps too few lines in flight); no loss when the weights are cache resident.
constexpr int64_t kPrefetchBytes = 2048;

namespace {

uint64_t read_xcr0() {
  uint32_t eax = 0;
  uint32_t edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

struct CpuFeatures {
  bool avx2 = false;
  bool avx512vnni = false;
};

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) {
    return f;
  }
  __cpuid_count(1, 0, a, b, c, d);
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  if (!osxsave || !avx) {
    return f;
  }
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1;
  const bool avx512f = (b >> 16) & 1;
  const bool avx512bw = (b >> 30) & 1;
  const bool avx512vl = (b >> 31) & 1;
  const bool avx512vnni = (c >> 11) & 1;
  f.avx2 = ymm_state && avx2;
  f.avx512vnni = f.avx2 && zmm_state && avx512f && avx512bw && avx512vl && avx512vnni;
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

// ---------------------------------------------------------------- activation quantization

BX_AVX2_INLINE float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

BX_AVX2_INLINE int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// round-half-even(x * s) clamped to [-128, 127], as int32 lanes: the same float operations as
// the scalar path (one multiply, one round to nearest even), so the results are identical.
BX_AVX2_INLINE __m256i quant8(const float* p, __m256 vs) {
  const __m256 lo = _mm256_set1_ps(-128.0f);
  const __m256 hi = _mm256_set1_ps(127.0f);
  __m256 v = _mm256_mul_ps(_mm256_loadu_ps(p), vs);
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  return _mm256_cvtps_epi32(v);
}

} // namespace

bool cpu_has_avx2() {
  return features().avx2;
}

bool cpu_has_avx512vnni() {
  return features().avx512vnni;
}

BX_AVX2 void quantize_avx2(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                           int32_t* xsum) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t t = 0; t < m; ++t) {
    const float* xr = x + t * k;
    int8_t* qr = xq + t * kp;
    __m256 vmax = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
      vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xr + i), absmask));
    }
    float mx = hmax_ps(vmax);
    for (; i < k; ++i) {
      const float a = std::fabs(xr[i]);
      mx = a > mx ? a : mx;
    }
    const float mclamped = mx < 1e-5f ? 1e-5f : mx;
    const float st = 127.0f / mclamped;
    const __m256 vs = _mm256_set1_ps(st);
    __m256i vsum = _mm256_setzero_si256();
    i = 0;
    for (; i + 32 <= k; i += 32) {
      const __m256i q0 = quant8(xr + i, vs);
      const __m256i q1 = quant8(xr + i + 8, vs);
      const __m256i q2 = quant8(xr + i + 16, vs);
      const __m256i q3 = quant8(xr + i + 24, vs);
      vsum = _mm256_add_epi32(vsum, _mm256_add_epi32(_mm256_add_epi32(q0, q1),
                                                     _mm256_add_epi32(q2, q3)));
      const __m256i w01 = _mm256_packs_epi32(q0, q1);
      const __m256i w23 = _mm256_packs_epi32(q2, q3);
      const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), perm);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + i), b);
    }
    int32_t sum = hsum_epi32(vsum);
    sum += quantize_scalar(xr, st, qr, i, k, kp);
    s[t] = st;
    xsum[t] = sum;
  }
}

// ---------------------------------------------------------------- AVX2 dot products
//
// One token (decode, the GEMV); several tokens go to the token-blocked GEMM below.
//
// One 32-byte row block c holds codes for 4 activation chunks. With h = c >> 4 (16-bit shift):
//   c & 0x03 -> codes of chunk 0          h & 0x03 -> codes of chunk 2
//   c & 0x0C -> 4 * codes of chunk 1      h & 0x0C -> 4 * codes of chunk 3
// vpmaddubsw (unsigned codes x signed activations, pairs summed into int16) feeds two int16
// accumulators per (row, token): `lo` at unit scale and `hi` at 4x. Every kAvx2Chunk blocks they
// are folded (hi >> 2 is exact: every term is a multiple of 4) and widened into int32.
// Bounds for |xq| <= 128: per block lo grows by <= 2*2*2*128 = 1024, hi by <= 2*2*8*128 = 4096;
// after 6 blocks |lo| <= 6144 and |hi| <= 24576 < 32767, and lo + (hi >> 2) <= 12288.

namespace {

constexpr int kAvx2Chunk = 6;

// R rows (starting at row r0 of the group) x T tokens.
template <int R, int T>
BX_AVX2_INLINE void avx2_tile(const uint8_t* wg, int r0, int64_t kb, const int8_t* const* xt,
                              int32_t out[][TQ2_GROUP_ROWS]) {
  const __m256i m03 = _mm256_set1_epi8(0x03);
  const __m256i m0c = _mm256_set1_epi8(0x0C);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_si256();
    }
  }
  for (int64_t b0 = 0; b0 < kb; b0 += kAvx2Chunk) {
    const int64_t b1 = b0 + kAvx2Chunk < kb ? b0 + kAvx2Chunk : kb;
    __m256i lo[R][T];
    __m256i hi[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        lo[r][t] = _mm256_setzero_si256();
        hi[r][t] = _mm256_setzero_si256();
      }
    }
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* wb = wg + b * TQ2_GROUP_BLOCK_BYTES + r0 * TQ2_BLOCK_BYTES;
      _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes), _MM_HINT_T0);
      for (int r = 0; r < R; ++r) {
        const __m256i c =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + r * TQ2_BLOCK_BYTES));
        const __m256i h = _mm256_srli_epi16(c, 4);
        const __m256i c0 = _mm256_and_si256(c, m03);
        const __m256i c1 = _mm256_and_si256(c, m0c);
        const __m256i c2 = _mm256_and_si256(h, m03);
        const __m256i c3 = _mm256_and_si256(h, m0c);
        for (int t = 0; t < T; ++t) {
          const __m256i* xb = reinterpret_cast<const __m256i*>(xt[t] + b * TQ2_BLOCK_K);
          const __m256i p0 = _mm256_maddubs_epi16(c0, _mm256_loadu_si256(xb + 0));
          const __m256i p2 = _mm256_maddubs_epi16(c2, _mm256_loadu_si256(xb + 2));
          const __m256i p1 = _mm256_maddubs_epi16(c1, _mm256_loadu_si256(xb + 1));
          const __m256i p3 = _mm256_maddubs_epi16(c3, _mm256_loadu_si256(xb + 3));
          lo[r][t] = _mm256_add_epi16(lo[r][t], _mm256_add_epi16(p0, p2));
          hi[r][t] = _mm256_add_epi16(hi[r][t], _mm256_add_epi16(p1, p3));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        const __m256i folded = _mm256_add_epi16(lo[r][t], _mm256_srai_epi16(hi[r][t], 2));
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(folded, ones));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      out[t][r0 + r] = hsum_epi32(acc[r][t]);
    }
  }
}

// Register budget (16 ymm): one token takes 2 rows at a time (lo, hi, acc for each: 6).
BX_AVX2_INLINE void avx2_group(const uint8_t* wg, int64_t kb, const int8_t* xt,
                               int32_t out[][TQ2_GROUP_ROWS]) {
  const int8_t* xts[1] = {xt};
  avx2_tile<2, 1>(wg, 0, kb, xts, out);
  avx2_tile<2, 1>(wg, 2, kb, xts, out);
}

} // namespace

BX_AVX2 void groups_avx2(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                         float* y, int64_t n, int64_t g0, int64_t g1) {
  // Called for one token (tq2_linear_f32 sends m >= 2 to the GEMM); any m stays correct.
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    for (int64_t t = 0; t < a.m; ++t) {
      int32_t dots[1][TQ2_GROUP_ROWS];
      avx2_group(wg, kb, a.xq + t * a.kp, dots);
      write_group(a, scale, y, n, g, t, 1, dots);
    }
  }
}

// ---------------------------------------------------------------- AVX2 token-blocked GEMM tile
//
// One row x T <= 8 tokens over nb <= 15 K-blocks (tq2_kernel.h, GemmTileFn). The row block is
// unpacked once into the 4 chunks' codes at unit scale (3 shifts, 4 ands) and used for all T
// tokens; each token then costs 4 vpmaddubsw with the activations as memory operands and 4 adds:
// the floor for vpmaddubsw, which does 32 multiplies an instruction. The four products of a
// block go into one int16 accumulator per token: |p| <= 2 * 2 * 128 = 512 a lane and product,
// so a block adds at most 2048 and nb <= 15 blocks stay below 32767 (kGemmMaxChunkBlocks).
// Registers (16 ymm): 8 accumulators, 4 codes, the mask and 3 temporaries.

namespace {

// dots[t] (int32 x 8 after vpmaddwd) summed across lanes, for all 8 slots at once, and added
// to out[0..7]: three rounds of vphaddd and one cross-lane add instead of 8 separate sums.
BX_AVX2_INLINE void add_hsum8(const __m256i* v, int32_t* out) {
  const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]);
  const __m256i h23 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]);
  const __m256i h67 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i h0123 = _mm256_hadd_epi32(h01, h23);  // lane half 0: k 0-3, half 1: k 4-7
  const __m256i h4567 = _mm256_hadd_epi32(h45, h67);
  const __m256i lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
  const __m256i hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), _mm256_add_epi32(lo, hi)));
}

// Rows a tile (R). One row x 8 tokens and a row pair x 4 tokens measured the same in L1 here
// (Zen 3, 9-10 ns per 1024 multiply-adds; the pair halves the activation loads but doubles the
// code registers, and GCC then spills); one row is the simpler one.
constexpr int kAvx2Rows = 1;

template <int R, int T>
BX_AVX2 __attribute__((noinline)) void avx2_gemm_tile(const uint8_t* w, int64_t nb,
                                                      const int8_t* x, int64_t xs, int32_t* acc) {
  const __m256i m03 = _mm256_set1_epi8(0x03);
  __m256i sum[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      sum[r][t] = _mm256_setzero_si256();
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = w + b * TQ2_GROUP_BLOCK_BYTES;
    _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes), _MM_HINT_T0);
    __m256i cq[R][4];
    for (int r = 0; r < R; ++r) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + r * TQ2_BLOCK_BYTES));
      cq[r][0] = _mm256_and_si256(c, m03);
      cq[r][1] = _mm256_and_si256(_mm256_srli_epi16(c, 2), m03);
      cq[r][2] = _mm256_and_si256(_mm256_srli_epi16(c, 4), m03);
      cq[r][3] = _mm256_and_si256(_mm256_srli_epi16(c, 6), m03);
    }
    const int8_t* xb = x + b * TQ2_BLOCK_K;
    for (int t = 0; t < T; ++t) {
      const __m256i* xt = reinterpret_cast<const __m256i*>(xb + t * xs);
      for (int r = 0; r < R; ++r) {
        // One chain per (row, token) (8 independent chains hide the latency) has fewer live
        // temporaries than a tree; the empty asm stops GCC from reassociating it back into a
        // tree, which spilled 6 of the 8 accumulators to the stack.
        __m256i v = sum[r][t];
        v = _mm256_add_epi16(v, _mm256_maddubs_epi16(cq[r][0], _mm256_loadu_si256(xt + 0)));
        __asm__("" : "+x"(v));
        v = _mm256_add_epi16(v, _mm256_maddubs_epi16(cq[r][1], _mm256_loadu_si256(xt + 1)));
        __asm__("" : "+x"(v));
        v = _mm256_add_epi16(v, _mm256_maddubs_epi16(cq[r][2], _mm256_loadu_si256(xt + 2)));
        __asm__("" : "+x"(v));
        v = _mm256_add_epi16(v, _mm256_maddubs_epi16(cq[r][3], _mm256_loadu_si256(xt + 3)));
        sum[r][t] = v;
      }
    }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < R; ++r) {
    __m256i wide[kGemmTokens];
    for (int t = 0; t < T; ++t) {
      wide[t] = _mm256_madd_epi16(sum[r][t], ones);
    }
    for (int t = T; t < kGemmTokens; ++t) {
      wide[t] = _mm256_setzero_si256();
    }
    add_hsum8(wide, acc + r * kGemmTokens);
  }
}

BX_AVX2 void avx2_gemm(const uint8_t* w, int64_t nb, const int8_t* x, int64_t xs, int tokens,
                       int32_t* acc) {
  switch (tokens) {
    case 8: avx2_gemm_tile<kAvx2Rows, 8>(w, nb, x, xs, acc); break;
    case 7: avx2_gemm_tile<kAvx2Rows, 7>(w, nb, x, xs, acc); break;
    case 6: avx2_gemm_tile<kAvx2Rows, 6>(w, nb, x, xs, acc); break;
    case 5: avx2_gemm_tile<kAvx2Rows, 5>(w, nb, x, xs, acc); break;
    case 4: avx2_gemm_tile<kAvx2Rows, 4>(w, nb, x, xs, acc); break;
    case 3: avx2_gemm_tile<kAvx2Rows, 3>(w, nb, x, xs, acc); break;
    case 2: avx2_gemm_tile<kAvx2Rows, 2>(w, nb, x, xs, acc); break;
    default: avx2_gemm_tile<kAvx2Rows, 1>(w, nb, x, xs, acc); break;
  }
}

} // namespace

GemmKernel gemm_kernel_avx2() {
  return GemmKernel{avx2_gemm, kAvx2Rows};
}

// ---------------------------------------------------------------- AVX-512 VNNI dot products
//
// One 64-byte load holds rows r and r+1 of a block (32 bytes each). The activation chunk q
// (32 bytes) is broadcast to both 256-bit halves. No shifts: the code of chunk q is c & (3 << 2q),
// i.e. 4^q * code, accumulated by vpdpbusd into its own int32 accumulator; at the end
// acc_q >> 2q is exact (every term is a multiple of 4^q).
// Bounds: one vpdpbusd adds 4 products of <= 128 * 128 to a lane, so after KB blocks
// |acc_3| <= 65536 * KB < 2^31 for K < 2^22; the operator accepts K <= 2^20 (kMaxK).

namespace {

BX_VNNI_INLINE void reduce_pair(__m512i v, int32_t* row_a, int32_t* row_b) {
  const __m256i a = _mm512_castsi512_si256(v);
  const __m256i b = _mm512_extracti64x4_epi64(v, 1);
  *row_a = hsum_epi32(a);
  *row_b = hsum_epi32(b);
}

// acc += dot4(u8 a, s8 b) per int32 lane. Inline asm: GCC 12 surrounds the intrinsic with
// register copies of the accumulator (two extra moves per vpdpbusd in the loop below).
BX_VNNI_INLINE __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// One row group (4 rows = 2 pairs) x one token. Accumulators are named, not an array: GCC
// otherwise shuffles them through extra register copies every iteration.
BX_VNNI_INLINE void vnni_group_token(const uint8_t* wg, int64_t kb, const int8_t* xt,
                                     int32_t out[TQ2_GROUP_ROWS]) {
  const __m512i mq0 = _mm512_set1_epi8(0x03);
  const __m512i mq1 = _mm512_set1_epi8(0x0C);
  const __m512i mq2 = _mm512_set1_epi8(0x30);
  const __m512i mq3 = _mm512_set1_epi8(static_cast<char>(0xC0));
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;  // rows 0-1
  __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;                      // rows 2-3
  for (int64_t b = 0; b < kb; ++b) {
    const __m256i* xb = reinterpret_cast<const __m256i*>(xt + b * TQ2_BLOCK_K);
    const __m512i x0 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xb + 0));
    const __m512i x1 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xb + 1));
    const __m512i x2 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xb + 2));
    const __m512i x3 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xb + 3));
    // Prefetches never fault, so running past the end of the tensor is harmless.
    const uint8_t* wb = wg + b * TQ2_GROUP_BLOCK_BYTES;
    _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes + 64), _MM_HINT_T0);
    // rows 0-1, then rows 2-3: two row blocks a 64-byte register
    const __m512i c = _mm512_loadu_si512(reinterpret_cast<const void*>(wb));
    const __m512i d = _mm512_loadu_si512(reinterpret_cast<const void*>(wb + 2 * TQ2_BLOCK_BYTES));
    a0 = dpbusd(a0, _mm512_and_si512(c, mq0), x0);
    a1 = dpbusd(a1, _mm512_and_si512(c, mq1), x1);
    a2 = dpbusd(a2, _mm512_and_si512(c, mq2), x2);
    a3 = dpbusd(a3, _mm512_and_si512(c, mq3), x3);
    b0 = dpbusd(b0, _mm512_and_si512(d, mq0), x0);
    b1 = dpbusd(b1, _mm512_and_si512(d, mq1), x1);
    b2 = dpbusd(b2, _mm512_and_si512(d, mq2), x2);
    b3 = dpbusd(b3, _mm512_and_si512(d, mq3), x3);
  }
  __m512i ta = _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 2));
  ta = _mm512_add_epi32(ta, _mm512_add_epi32(_mm512_srai_epi32(a2, 4), _mm512_srai_epi32(a3, 6)));
  __m512i tb = _mm512_add_epi32(b0, _mm512_srai_epi32(b1, 2));
  tb = _mm512_add_epi32(tb, _mm512_add_epi32(_mm512_srai_epi32(b2, 4), _mm512_srai_epi32(b3, 6)));
  reduce_pair(ta, &out[0], &out[1]);
  reduce_pair(tb, &out[2], &out[3]);
}

// ---------------------------------------------------------------- AVX-512 VNNI token-blocked GEMM tile
//
// The AVX2 tile's twin: a whole row group (rows 0-1 in one 64-byte register, rows 2-3 in the
// next) x T <= 8 tokens over nb K-blocks. Each block is unpacked once into unit-scale codes
// (8 registers: 2 x 4 chunks, 3 shifts and 4 ands a register) and used for all T tokens; a
// token costs 4 broadcast loads (its 4 activation chunks into both 256-bit halves) and 8
// vpdpbusd, each broadcast feeding both row pairs. Registers (32 zmm): 16 accumulators (2 row
// pairs x 8 tokens), 8 codes, the mask and the broadcasts. Bounds: a vpdpbusd adds at most
// 4 * 2 * 128 to a lane, 4 of them a block, so |acc| <= 4096 * KB < 2^31 for K <= kMaxK.

template <int T>
BX_VNNI __attribute__((noinline)) void vnni_gemm_tile(const uint8_t* w, int64_t nb,
                                                      const int8_t* x, int64_t xs, int32_t* acc) {
  const __m512i m03 = _mm512_set1_epi8(0x03);
  __m512i s01[T];  // rows 0-1 of the group, token t
  __m512i s23[T];  // rows 2-3
  for (int t = 0; t < T; ++t) {
    s01[t] = _mm512_setzero_si512();
    s23[t] = _mm512_setzero_si512();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = w + b * TQ2_GROUP_BLOCK_BYTES;
    _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(wb + kPrefetchBytes + 64), _MM_HINT_T0);
    const __m512i c = _mm512_loadu_si512(reinterpret_cast<const void*>(wb));
    const __m512i d = _mm512_loadu_si512(reinterpret_cast<const void*>(wb + 2 * TQ2_BLOCK_BYTES));
    const __m512i c0 = _mm512_and_si512(c, m03);
    const __m512i c1 = _mm512_and_si512(_mm512_srli_epi16(c, 2), m03);
    const __m512i c2 = _mm512_and_si512(_mm512_srli_epi16(c, 4), m03);
    const __m512i c3 = _mm512_and_si512(_mm512_srli_epi16(c, 6), m03);
    const __m512i d0 = _mm512_and_si512(d, m03);
    const __m512i d1 = _mm512_and_si512(_mm512_srli_epi16(d, 2), m03);
    const __m512i d2 = _mm512_and_si512(_mm512_srli_epi16(d, 4), m03);
    const __m512i d3 = _mm512_and_si512(_mm512_srli_epi16(d, 6), m03);
    const int8_t* xb = x + b * TQ2_BLOCK_K;
    for (int t = 0; t < T; ++t) {
      const __m256i* xt = reinterpret_cast<const __m256i*>(xb + t * xs);
      const __m512i x0 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xt + 0));
      const __m512i x1 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xt + 1));
      const __m512i x2 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xt + 2));
      const __m512i x3 = _mm512_broadcast_i64x4(_mm256_loadu_si256(xt + 3));
      s01[t] = dpbusd(s01[t], c0, x0);
      s23[t] = dpbusd(s23[t], d0, x0);
      s01[t] = dpbusd(s01[t], c1, x1);
      s23[t] = dpbusd(s23[t], d1, x1);
      s01[t] = dpbusd(s01[t], c2, x2);
      s23[t] = dpbusd(s23[t], d2, x2);
      s01[t] = dpbusd(s01[t], c3, x3);
      s23[t] = dpbusd(s23[t], d3, x3);
    }
  }
  for (int t = 0; t < T; ++t) {
    int32_t r[TQ2_GROUP_ROWS];
    reduce_pair(s01[t], &r[0], &r[1]);
    reduce_pair(s23[t], &r[2], &r[3]);
    for (int i = 0; i < TQ2_GROUP_ROWS; ++i) {
      acc[i * kGemmTokens + t] += r[i];
    }
  }
}

BX_VNNI void vnni_gemm(const uint8_t* w, int64_t nb, const int8_t* x, int64_t xs, int tokens,
                       int32_t* acc) {
  switch (tokens) {
    case 8: vnni_gemm_tile<8>(w, nb, x, xs, acc); break;
    case 7: vnni_gemm_tile<7>(w, nb, x, xs, acc); break;
    case 6: vnni_gemm_tile<6>(w, nb, x, xs, acc); break;
    case 5: vnni_gemm_tile<5>(w, nb, x, xs, acc); break;
    case 4: vnni_gemm_tile<4>(w, nb, x, xs, acc); break;
    case 3: vnni_gemm_tile<3>(w, nb, x, xs, acc); break;
    case 2: vnni_gemm_tile<2>(w, nb, x, xs, acc); break;
    default: vnni_gemm_tile<1>(w, nb, x, xs, acc); break;
  }
}

} // namespace

GemmKernel gemm_kernel_avx512vnni() {
  return GemmKernel{vnni_gemm, TQ2_GROUP_ROWS};
}

BX_VNNI void groups_avx512vnni(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                               float* y, int64_t n, int64_t g0, int64_t g1) {
  // One token (decode): tq2_linear_f32 sends m >= 2 to the token-blocked GEMM (vnni_gemm_tile);
  // any m stays correct, a token at a time.
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    for (int64_t t = 0; t < a.m; ++t) {
      int32_t dots[1][TQ2_GROUP_ROWS];
      vnni_group_token(wg, kb, a.xq + t * a.kp, dots[0]);
      write_group(a, scale, y, n, g, t, 1, dots);
    }
  }
}

} // namespace detail
} // namespace tq2
} // namespace bitexport

#endif // defined(__x86_64__)
