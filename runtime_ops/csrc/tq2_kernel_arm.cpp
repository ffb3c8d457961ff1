/*
 * tq2 linear, aarch64 paths: plain NEON (every Armv8-A core), NEON + dot product (FEAT_DotProd,
 * sdot) and NEON + int8 matrix multiply (FEAT_I8MM, smmla). The file builds for baseline
 * Armv8-A: the dotprod and i8mm functions carry their own target attributes, so no wider
 * instruction leaks into code a core without them runs, and tq2_kernel.cpp calls them only after
 * HWCAP (Linux, Android) or sysctl (Apple) said yes. Layout and arithmetic: tq2_layout.h; every
 * path returns the portable path's floats bit for bit (exact int32 sums, the same float steps).
 *
 * One 32-byte row block is two q registers. Shifting a byte right by 2q and masking with 3 gives
 * chunk q's codes (0, 1, 2) for 16 consecutive k; the kernels multiply codes (not weights) by the
 * activations and subtract sum(xq) at the end (tq2_layout.h), which saves a subtraction per
 * weight register.
 */
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cmath>
#include <cstdint>

#include "tq2_kernel.h"
#include "tq2_layout.h"

#if defined(__linux__)  // Android included
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// GCC's arm_neon.h defines the sdot / smmla intrinsics under "arch=armv8.2-a+..." and refuses to
// inline them into a function whose target is only "+dotprod" (armv8-a + dotprod), so the
// attributes name the architecture level too. Every core with FEAT_DotProd implements Armv8.2-A
// at least (the feature is optional from v8.2, mandatory from v8.4), so this admits nothing a
// dotprod core lacks.
//
// The *_TILE functions hold the inner loops. They stay out of line (one call per row group and
// token tile, each running over all of K), so that each inner loop is one named function for a
// profiler or llvm-mca (runtime_ops/README.md).
#define BX_NEON_INLINE __attribute__((always_inline)) inline
#define BX_NEON_TILE __attribute__((noinline))
#define BX_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define BX_DOTPROD_TILE __attribute__((target("arch=armv8.2-a+dotprod"), noinline))
#define BX_I8MM __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))
#define BX_I8MM_TILE __attribute__((target("arch=armv8.2-a+dotprod+i8mm"), noinline))

namespace bitexport {
namespace tq2 {
namespace detail {

// Software prefetch distance along the weight stream: the distance measured on x86
// (tq2_kernel_x86.cpp). Not measured on a phone; a prefetch never faults, so running past the
// end of the tensor is harmless.
constexpr int64_t kPrefetchBytes = 2048;

namespace {

// ---------------------------------------------------------------- CPU features

struct CpuFeatures {
  bool dotprod = false;
  bool i8mm = false;
};

#if defined(__linux__)
// Linux uapi values (arch/arm64/include/uapi/asm/hwcap.h), spelled out because older NDK and
// glibc headers lack HWCAP2_I8MM.
constexpr unsigned long kHwcapAsimdDp = 1UL << 20;
constexpr unsigned long kHwcap2I8mm = 1UL << 13;
#elif defined(__APPLE__)
bool sysctl_flag(const char* name) {
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__linux__)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  const unsigned long hwcap2 = getauxval(AT_HWCAP2);
  f.dotprod = (hwcap & kHwcapAsimdDp) != 0;
  f.i8mm = f.dotprod && (hwcap2 & kHwcap2I8mm) != 0;
#elif defined(__APPLE__)
  f.dotprod = sysctl_flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = f.dotprod && sysctl_flag("hw.optional.arm.FEAT_I8MM");
#endif
  // Elsewhere (no known way to ask): plain NEON only.
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

// ---------------------------------------------------------------- activation quantization

// round-half-even(x * s) clamped to [-128, 127], as int32 lanes: one float multiply and one
// round-to-nearest-even (frintn), like nearbyint in the portable path. A NaN product stays NaN
// through fmax/fmin and fcvtzs turns it into 0, as the portable path does.
BX_NEON_INLINE int32x4_t quant4(const float* p, float32x4_t vs) {
  float32x4_t v = vrndnq_f32(vmulq_f32(vld1q_f32(p), vs));
  v = vminq_f32(vmaxq_f32(v, vdupq_n_f32(-128.0f)), vdupq_n_f32(127.0f));
  return vcvtq_s32_f32(v);
}

// ---------------------------------------------------------------- codes

// Codes (0, 1, 2) of chunk q from 16 packed bytes: the shift/mask of tq2_layout.h. The top
// chunk needs no mask.
template <int Q>
BX_NEON_INLINE int8x16_t codes(uint8x16_t c) {
  static_assert(Q >= 0 && Q < TQ2_CHUNKS, "chunk index");
  const uint8x16_t mask = vdupq_n_u8(TQ2_CODE_MASK);
  if constexpr (Q == 0) {
    return vreinterpretq_s8_u8(vandq_u8(c, mask));
  } else if constexpr (Q == TQ2_CHUNKS - 1) {
    return vreinterpretq_s8_u8(vshrq_n_u8(c, TQ2_CODE_BITS * Q));
  } else {
    return vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(c, TQ2_CODE_BITS * Q), mask));
  }
}

// The 128 codes of one row block in K order: w[2q + h] holds k = 32q + 16h .. 32q + 16h + 15,
// i.e. register i matches the activations at byte 16 i of the block.
BX_NEON_INLINE void unpack_row(const uint8_t* rb, int8x16_t w[8]) {
  const uint8x16_t lo = vld1q_u8(rb);
  const uint8x16_t hi = vld1q_u8(rb + 16);
  w[0] = codes<0>(lo);
  w[1] = codes<0>(hi);
  w[2] = codes<1>(lo);
  w[3] = codes<1>(hi);
  w[4] = codes<2>(lo);
  w[5] = codes<2>(hi);
  w[6] = codes<3>(lo);
  w[7] = codes<3>(hi);
}

// ---------------------------------------------------------------- plain NEON
//
// smlal (low 8 bytes) and smlal2 (high 8 bytes) into int16 accumulators, widened into int32 by
// sadalp every kNeonFold blocks. Bound: a product code * xq lies in [-254, 254] (|xq| <= 127: the
// largest |x| maps to 127); each int16 lane takes 16 of them a block (8 registers x both halves),
// so |lane| <= 4064 a block and <= 32512 < 32767 after 8 blocks.
constexpr int64_t kNeonFold = 8;

// Rows r, r+1 x T tokens; out[t][i] = sum(xq * code) of token t, row r + i. wr: row r's block 0;
// blocks lie TQ2_GROUP_BLOCK_BYTES apart. Two rows share each activation load and T tokens each
// unpacking; 16 code registers + 2T int16 accumulators stay in registers in the loop for T <= 4
// (GCC keeps the int32 ones on the stack between folds). Measured under qemu (instructions
// executed, 2560 x 2560, 16 tokens): 0.85 a weight byte and token, against 0.99 with 2 tokens
// and 1.02 with one row x 4 tokens.
template <int T>
BX_NEON_TILE void neon_tile(const uint8_t* wr, int64_t kb, const int8_t* const* xt,
                            int32_t out[][2]) {
  int32x4_t acc[2][T];
  for (int i = 0; i < 2; ++i) {
    for (int t = 0; t < T; ++t) {
      acc[i][t] = vdupq_n_s32(0);
    }
  }
  for (int64_t b0 = 0; b0 < kb; b0 += kNeonFold) {
    const int64_t b1 = b0 + kNeonFold < kb ? b0 + kNeonFold : kb;
    int16x8_t part[2][T];
    for (int i = 0; i < 2; ++i) {
      for (int t = 0; t < T; ++t) {
        part[i][t] = vdupq_n_s16(0);
      }
    }
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* wb = wr + b * TQ2_GROUP_BLOCK_BYTES;
      __builtin_prefetch(wb + kPrefetchBytes);
      int8x16_t w0[8];
      int8x16_t w1[8];
      unpack_row(wb, w0);
      unpack_row(wb + TQ2_BLOCK_BYTES, w1);
      for (int t = 0; t < T; ++t) {
        const int8_t* xb = xt[t] + b * TQ2_BLOCK_K;
        for (int j = 0; j < 8; ++j) {
          const int8x16_t x = vld1q_s8(xb + 16 * j);
          part[0][t] = vmlal_s8(part[0][t], vget_low_s8(w0[j]), vget_low_s8(x));
          part[1][t] = vmlal_s8(part[1][t], vget_low_s8(w1[j]), vget_low_s8(x));
          part[0][t] = vmlal_high_s8(part[0][t], w0[j], x);
          part[1][t] = vmlal_high_s8(part[1][t], w1[j], x);
        }
      }
    }
    for (int i = 0; i < 2; ++i) {
      for (int t = 0; t < T; ++t) {
        acc[i][t] = vpadalq_s16(acc[i][t], part[i][t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    out[t][0] = vaddvq_s32(acc[0][t]);
    out[t][1] = vaddvq_s32(acc[1][t]);
  }
}

// ---------------------------------------------------------------- dot product (sdot)
//
// Decode, one token: memory bound on a phone, so the unpacking must cost little. Masking the
// unshifted byte with 3 << 2 gives 4 * code of chunk 1, and (byte >> 2) & (3 << 2) gives 4 * code
// of chunk 2; both go to a x4 accumulator, shifted back by 2 at the end (exact: every term is a
// multiple of 4). Chunk 0 is a plain mask and chunk 3 a plain shift, into a unit accumulator. So
// a 16-byte register costs 5 logic ops for 4 sdot (7 when every chunk is shifted down to unit
// codes) and a row needs 2 accumulators: 4 rows x 2 + 8 activation registers stay in registers.
// Bounds: a lane of the x4 accumulator gains <= 4 sdot x 4 x 8 x 127 < 2^14 a block, so < 2^27
// for K <= kMaxK = 2^20 (8192 blocks).
BX_DOTPROD_TILE void dot_gemv(const uint8_t* wg, int64_t kb, const int8_t* x,
                              int32_t out[TQ2_GROUP_ROWS]) {
  const uint8x16_t m1 = vdupq_n_u8(TQ2_CODE_MASK);
  const uint8x16_t m4 = vdupq_n_u8(TQ2_CODE_MASK << TQ2_CODE_BITS);
  int32x4_t a1[TQ2_GROUP_ROWS];  // chunks 0 and 3, unit scale
  int32x4_t a4[TQ2_GROUP_ROWS];  // chunks 1 and 2, x4
  for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
    a1[r] = vdupq_n_s32(0);
    a4[r] = vdupq_n_s32(0);
  }
  for (int64_t b = 0; b < kb; ++b) {
    const int8_t* xb = x + b * TQ2_BLOCK_K;
    const int8x16_t x0 = vld1q_s8(xb), x1 = vld1q_s8(xb + 16);
    const int8x16_t x2 = vld1q_s8(xb + 32), x3 = vld1q_s8(xb + 48);
    const int8x16_t x4 = vld1q_s8(xb + 64), x5 = vld1q_s8(xb + 80);
    const int8x16_t x6 = vld1q_s8(xb + 96), x7 = vld1q_s8(xb + 112);
    const uint8_t* wb = wg + b * TQ2_GROUP_BLOCK_BYTES;
    __builtin_prefetch(wb + kPrefetchBytes);
    __builtin_prefetch(wb + kPrefetchBytes + 64);
    for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
      const uint8x16_t lo = vld1q_u8(wb + r * TQ2_BLOCK_BYTES);
      const uint8x16_t hi = vld1q_u8(wb + r * TQ2_BLOCK_BYTES + 16);
      const uint8x16_t lo2 = vshrq_n_u8(lo, TQ2_CODE_BITS);
      const uint8x16_t hi2 = vshrq_n_u8(hi, TQ2_CODE_BITS);
      a1[r] = vdotq_s32(a1[r], vreinterpretq_s8_u8(vandq_u8(lo, m1)), x0);
      a1[r] = vdotq_s32(a1[r], vreinterpretq_s8_u8(vandq_u8(hi, m1)), x1);
      a4[r] = vdotq_s32(a4[r], vreinterpretq_s8_u8(vandq_u8(lo, m4)), x2);
      a4[r] = vdotq_s32(a4[r], vreinterpretq_s8_u8(vandq_u8(hi, m4)), x3);
      a4[r] = vdotq_s32(a4[r], vreinterpretq_s8_u8(vandq_u8(lo2, m4)), x4);
      a4[r] = vdotq_s32(a4[r], vreinterpretq_s8_u8(vandq_u8(hi2, m4)), x5);
      a1[r] = vdotq_s32(a1[r], codes<3>(lo), x6);
      a1[r] = vdotq_s32(a1[r], codes<3>(hi), x7);
    }
  }
  for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
    out[r] = vaddvq_s32(vaddq_s32(a1[r], vshrq_n_s32(a4[r], TQ2_CODE_BITS)));
  }
}

// Prefill: one row x T tokens. Each row block is unpacked once (8 registers of codes, 6 logic
// ops a 16-byte half) and used for T = 8 tokens, 8 sdot each: 12 logic ops per 64 sdot, and
// both kinds compete for the same vector pipes (2 on a Cortex-A76). A row pair x 4 tokens (the
// most that fits the registers) would halve the activation loads, which have pipes of their own,
// but spend 24 logic ops per 64 sdot: 88 vector-pipe ops against 76, so one row x 8 it is
// (counted from the code, not timed).
template <int T>
BX_DOTPROD_TILE void dot_tile(const uint8_t* wr, int64_t kb, const int8_t* const* xt, int32_t* out) {
  int32x4_t acc[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = vdupq_n_s32(0);
  }
  for (int64_t b = 0; b < kb; ++b) {
    const uint8_t* wb = wr + b * TQ2_GROUP_BLOCK_BYTES;
    __builtin_prefetch(wb + kPrefetchBytes);
    int8x16_t w[8];
    unpack_row(wb, w);
    for (int t = 0; t < T; ++t) {
      const int8_t* xb = xt[t] + b * TQ2_BLOCK_K;
      for (int i = 0; i < 8; ++i) {
        acc[t] = vdotq_s32(acc[t], w[i], vld1q_s8(xb + 16 * i));
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    out[t] = vaddvq_s32(acc[t]);
  }
}

// ---------------------------------------------------------------- int8 matrix multiply (smmla)
//
// smmla acc, A, B: acc (2x2 int32, lane 2i+j) += A (2x8 int8, row i = bytes 8i..8i+7) times B^T
// (B 2x8, row j = token j): 32 multiply-adds against sdot's 16. A holds 8 consecutive k of rows
// r and r+1: zipping the packed 64-bit halves of the two rows' blocks before unpacking gives
// exactly that, 4 zips a row pair a block. B is a token pair from QuantizedActs::xq_pairs, laid
// out by pair_tokens_neon so that one 16-byte load is the matching 8 k of both tokens.

// Rows r, r+1 (wr: row r's block 0) x P token pairs (xp: pair 0, pairs pair_stride bytes
// apart); out[2p + j][i] = sum(xq * code) of token 2p + j, row r + i. A row pair at a time keeps
// P accumulators, 4 zipped and 4 unpacked registers live.
template <int P>
BX_I8MM_TILE void mmla_tile(const uint8_t* wr, int64_t kb, const int8_t* xp, int64_t pair_stride,
                            int32_t out[][2]) {
  int32x4_t acc[P];
  for (int p = 0; p < P; ++p) {
    acc[p] = vdupq_n_s32(0);
  }
  for (int64_t b = 0; b < kb; ++b) {
    const uint8_t* ra = wr + b * TQ2_GROUP_BLOCK_BYTES;
    const uint8_t* rb = ra + TQ2_BLOCK_BYTES;
    __builtin_prefetch(ra + kPrefetchBytes);
    const int8_t* xb = xp + b * 2 * TQ2_BLOCK_K;
    const uint64x2_t alo = vreinterpretq_u64_u8(vld1q_u8(ra));
    const uint64x2_t ahi = vreinterpretq_u64_u8(vld1q_u8(ra + 16));
    const uint64x2_t blo = vreinterpretq_u64_u8(vld1q_u8(rb));
    const uint64x2_t bhi = vreinterpretq_u64_u8(vld1q_u8(rb + 16));
    // z[i]: bytes 8i .. 8i+7 of row r's block, then the same bytes of row r+1's block.
    const uint8x16_t z[4] = {vreinterpretq_u8_u64(vzip1q_u64(alo, blo)),
                             vreinterpretq_u8_u64(vzip2q_u64(alo, blo)),
                             vreinterpretq_u8_u64(vzip1q_u64(ahi, bhi)),
                             vreinterpretq_u8_u64(vzip2q_u64(ahi, bhi))};
    for (int i = 0; i < 4; ++i) {
      // Byte j of the block holds k = 32q + j: z[i] after chunk q's shift covers
      // k = 32q + 8i .. 32q + 8i + 7, the (4q + i)-th 8-byte piece of the block.
      const int8x16_t w0 = codes<0>(z[i]);
      const int8x16_t w1 = codes<1>(z[i]);
      const int8x16_t w2 = codes<2>(z[i]);
      const int8x16_t w3 = codes<3>(z[i]);
      for (int p = 0; p < P; ++p) {
        const int8_t* xq = xb + p * pair_stride;
        acc[p] = vmmlaq_s32(acc[p], w0, vld1q_s8(xq + (0 * 4 + i) * 16));
        acc[p] = vmmlaq_s32(acc[p], w1, vld1q_s8(xq + (1 * 4 + i) * 16));
        acc[p] = vmmlaq_s32(acc[p], w2, vld1q_s8(xq + (2 * 4 + i) * 16));
        acc[p] = vmmlaq_s32(acc[p], w3, vld1q_s8(xq + (3 * 4 + i) * 16));
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    // lane 2i + j: row r + i, token 2p + j
    out[2 * p][0] = vgetq_lane_s32(acc[p], 0);
    out[2 * p + 1][0] = vgetq_lane_s32(acc[p], 1);
    out[2 * p][1] = vgetq_lane_s32(acc[p], 2);
    out[2 * p + 1][1] = vgetq_lane_s32(acc[p], 3);
  }
}

} // namespace

bool cpu_has_neon_dotprod() {
  return features().dotprod;
}

bool cpu_has_neon_i8mm() {
  return features().i8mm;
}

void quantize_neon(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                   int32_t* xsum) {
  for (int64_t t = 0; t < m; ++t) {
    const float* xr = x + t * k;
    int8_t* qr = xq + t * kp;
    // max|x| with the portable path's rule `a > mx ? a : mx` per lane (compare + select rather
    // than fmax/fmaxnm, which treat NaNs differently): NaNs are skipped, the order of the
    // remaining values does not change their maximum.
    float32x4_t vmax = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
      const float32x4_t a = vabsq_f32(vld1q_f32(xr + i));
      vmax = vbslq_f32(vcgtq_f32(a, vmax), a, vmax);
    }
    float lanes[4];
    vst1q_f32(lanes, vmax);
    float mx = 0.0f;
    for (const float a : lanes) {
      mx = a > mx ? a : mx;
    }
    for (; i < k; ++i) {
      const float a = std::fabs(xr[i]);
      mx = a > mx ? a : mx;
    }
    const float mclamped = mx < 1e-5f ? 1e-5f : mx;
    const float st = 127.0f / mclamped;
    const float32x4_t vs = vdupq_n_f32(st);
    int32x4_t vsum = vdupq_n_s32(0);
    i = 0;
    for (; i + 16 <= k; i += 16) {
      const int32x4_t q0 = quant4(xr + i, vs);
      const int32x4_t q1 = quant4(xr + i + 4, vs);
      const int32x4_t q2 = quant4(xr + i + 8, vs);
      const int32x4_t q3 = quant4(xr + i + 12, vs);
      vsum = vaddq_s32(vsum, vaddq_s32(vaddq_s32(q0, q1), vaddq_s32(q2, q3)));
      const int16x8_t h01 = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
      const int16x8_t h23 = vcombine_s16(vmovn_s32(q2), vmovn_s32(q3));
      vst1q_s8(qr + i, vcombine_s8(vmovn_s16(h01), vmovn_s16(h23)));
    }
    int32_t sum = vaddvq_s32(vsum);
    sum += quantize_scalar(xr, st, qr, i, k, kp);
    s[t] = st;
    xsum[t] = sum;
  }
}

void pair_tokens_neon(const int8_t* xq, int64_t m, int64_t kp, int8_t* pairs) {
  const int8x16_t zero = vdupq_n_s8(0);
  for (int64_t p = 0; p < (m + 1) / 2; ++p) {
    const int8_t* x0 = xq + 2 * p * kp;
    const int8_t* x1 = 2 * p + 1 < m ? x0 + kp : nullptr;
    int8_t* out = pairs + p * 2 * kp;
    for (int64_t i = 0; i < kp; i += 16) {
      const int64x2_t a = vreinterpretq_s64_s8(vld1q_s8(x0 + i));
      const int64x2_t b = vreinterpretq_s64_s8(x1 != nullptr ? vld1q_s8(x1 + i) : zero);
      vst1q_s8(out + 2 * i, vreinterpretq_s8_s64(vzip1q_s64(a, b)));
      vst1q_s8(out + 2 * i + 16, vreinterpretq_s8_s64(vzip2q_s64(a, b)));
    }
  }
}

namespace {

// The row tiles over the 4 rows of a group, tokens [t0, t0 + T): dots[t][r].
template <int T>
BX_NEON_INLINE void neon_rows(const QuantizedActs& a, const uint8_t* wg, int64_t kb, int64_t t0,
                              int32_t dots[][TQ2_GROUP_ROWS]) {
  const int8_t* xt[T];
  for (int t = 0; t < T; ++t) {
    xt[t] = a.xq + (t0 + t) * a.kp;
  }
  for (int h = 0; h < TQ2_GROUP_ROWS / 2; ++h) {
    int32_t pair[T][2];
    neon_tile<T>(wg + 2 * h * TQ2_BLOCK_BYTES, kb, xt, pair);
    for (int t = 0; t < T; ++t) {
      dots[t][2 * h] = pair[t][0];
      dots[t][2 * h + 1] = pair[t][1];
    }
  }
}

template <int T>
BX_NEON_INLINE void dot_rows(const QuantizedActs& a, const uint8_t* wg, int64_t kb, int64_t t0,
                             int32_t dots[][TQ2_GROUP_ROWS]) {
  const int8_t* xt[T];
  for (int t = 0; t < T; ++t) {
    xt[t] = a.xq + (t0 + t) * a.kp;
  }
  for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
    int32_t col[T];
    dot_tile<T>(wg + r * TQ2_BLOCK_BYTES, kb, xt, col);
    for (int t = 0; t < T; ++t) {
      dots[t][r] = col[t];
    }
  }
}

// Token pairs [p0, p0 + P) (tokens 2 p0 .. 2 (p0 + P) - 1) over the group's 2 row pairs.
template <int P>
BX_NEON_INLINE void mmla_rows(const QuantizedActs& a, const uint8_t* wg, int64_t kb, int64_t p0,
                              int32_t dots[][TQ2_GROUP_ROWS]) {
  const int64_t stride = 2 * a.kp;
  for (int h = 0; h < TQ2_GROUP_ROWS / 2; ++h) {
    int32_t pair[2 * P][2];
    mmla_tile<P>(wg + 2 * h * TQ2_BLOCK_BYTES, kb, a.xq_pairs + p0 * stride, stride, pair);
    for (int t = 0; t < 2 * P; ++t) {
      dots[t][2 * h] = pair[t][0];
      dots[t][2 * h + 1] = pair[t][1];
    }
  }
}

} // namespace

void groups_neon(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                 int64_t n, int64_t g0, int64_t g1) {
  // Tokens 4 at a time, then 2, 1; the group's weights (kb * 128 bytes) stay in L1 across the tiles.
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    int32_t dots[4][TQ2_GROUP_ROWS];
    int64_t t = 0;
    for (; t + 4 <= a.m; t += 4) {
      neon_rows<4>(a, wg, kb, t, dots);
      write_group(a, scale, y, n, g, t, 4, dots);
    }
    if (t + 2 <= a.m) {
      neon_rows<2>(a, wg, kb, t, dots);
      write_group(a, scale, y, n, g, t, 2, dots);
      t += 2;
    }
    if (t < a.m) {
      neon_rows<1>(a, wg, kb, t, dots);
      write_group(a, scale, y, n, g, t, 1, dots);
    }
  }
}

BX_DOTPROD void groups_neon_dotprod(const QuantizedActs& a, const uint8_t* packed,
                                    const float* scale, float* y, int64_t n, int64_t g0,
                                    int64_t g1) {
  // Tokens 8 at a time, then 4, 3, 2; a single token takes the decode GEMV.
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    int32_t dots[8][TQ2_GROUP_ROWS];
    int64_t t = 0;
    for (; t + 8 <= a.m; t += 8) {
      dot_rows<8>(a, wg, kb, t, dots);
      write_group(a, scale, y, n, g, t, 8, dots);
    }
    if (t + 4 <= a.m) {
      dot_rows<4>(a, wg, kb, t, dots);
      write_group(a, scale, y, n, g, t, 4, dots);
      t += 4;
    }
    const int64_t rest = a.m - t;
    if (rest == 3) {
      dot_rows<3>(a, wg, kb, t, dots);
    } else if (rest == 2) {
      dot_rows<2>(a, wg, kb, t, dots);
    } else if (rest == 1) {
      dot_gemv(wg, kb, a.xq + t * a.kp, dots[0]);
    }
    if (rest > 0) {
      write_group(a, scale, y, n, g, t, static_cast<int>(rest), dots);
    }
  }
}

BX_I8MM void groups_neon_i8mm(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                              float* y, int64_t n, int64_t g0, int64_t g1) {
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  if (a.xq_pairs == nullptr) {
    // One token (the driver pairs tokens only for m >= 2): smmla would waste half its work on
    // a missing partner, sdot does not.
    for (int64_t g = g0; g < g1; ++g) {
      const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
      for (int64_t t = 0; t < a.m; ++t) {
        int32_t dots[1][TQ2_GROUP_ROWS];
        dot_gemv(wg, kb, a.xq + t * a.kp, dots[0]);
        write_group(a, scale, y, n, g, t, 1, dots);
      }
    }
    return;
  }
  // Token pairs 4 at a time (8 tokens), then 3, 2, 1; the last pair of an odd m has a zero
  // partner whose outputs are dropped.
  const int64_t pairs = (a.m + 1) / 2;
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    int32_t dots[8][TQ2_GROUP_ROWS];
    int64_t p = 0;
    for (; p + 4 <= pairs; p += 4) {
      mmla_rows<4>(a, wg, kb, p, dots);
      const int64_t t0 = 2 * p;
      write_group(a, scale, y, n, g, t0, static_cast<int>(a.m - t0 < 8 ? a.m - t0 : 8), dots);
    }
    const int64_t rest = pairs - p;
    if (rest == 3) {
      mmla_rows<3>(a, wg, kb, p, dots);
    } else if (rest == 2) {
      mmla_rows<2>(a, wg, kb, p, dots);
    } else if (rest == 1) {
      mmla_rows<1>(a, wg, kb, p, dots);
    }
    if (rest > 0) {
      const int64_t t0 = 2 * p;
      write_group(a, scale, y, n, g, t0, static_cast<int>(a.m - t0), dots);
    }
  }
}

} // namespace detail
} // namespace tq2
} // namespace bitexport

#endif // defined(__aarch64__)
