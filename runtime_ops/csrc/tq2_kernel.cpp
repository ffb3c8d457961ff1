/*
 * tq2 linear: the portable path, the per-call driver (activation quantization, thread split) and
 * the run-time choice of instruction set. x86 code lives in tq2_kernel_x86.cpp only; this file
 * builds unchanged for any target.
 */
#include "tq2_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include "tq2_layout.h"

namespace bitexport {
namespace tq2 {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
  }
  return "portable";
}

Isa best_supported_isa() {
#if defined(__x86_64__)
  static const Isa best = detail::cpu_has_avx512vnni() ? Isa::kAvx512Vnni
      : detail::cpu_has_avx2()                          ? Isa::kAvx2
                                                        : Isa::kPortable;
  return best;
#else
  return Isa::kPortable;
#endif
}

Isa selected_isa() {
  const Isa best = best_supported_isa();
  const char* env = std::getenv("BITEXPORT_TQ2_ISA");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) {
    return best;
  }
  Isa wanted = best;
  if (std::strcmp(env, "portable") == 0) {
    wanted = Isa::kPortable;
  } else if (std::strcmp(env, "avx2") == 0) {
    wanted = Isa::kAvx2;
  } else if (std::strcmp(env, "avx512vnni") == 0) {
    wanted = Isa::kAvx512Vnni;
  }
  // Never more than the CPU has: asking for avx512vnni on an AVX2-only CPU gives avx2.
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

namespace detail {

void quantize_portable(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                       int32_t* xsum) {
  for (int64_t t = 0; t < m; ++t) {
    const float* xr = x + t * k;
    int8_t* qr = xq + t * kp;
    float mx = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      const float a = std::fabs(xr[i]);
      mx = a > mx ? a : mx;
    }
    const float mclamped = mx < 1e-5f ? 1e-5f : mx;
    const float st = 127.0f / mclamped;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      const float prod = xr[i] * st;
      float v = std::nearbyint(prod);
      v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
      const int32_t q = v == v ? static_cast<int32_t>(v) : 0;  // NaN input: 0, never UB
      qr[i] = static_cast<int8_t>(q);
      sum += q;
    }
    for (int64_t i = k; i < kp; ++i) {
      qr[i] = 0;
    }
    s[t] = st;
    xsum[t] = sum;
  }
}

namespace {

// Unpacks the 32-byte block of one row into its 128 weights (-1, 0, +1) in K order.
inline void unpack_block(const uint8_t* w, int8_t* weights) {
  for (int j = 0; j < TQ2_BLOCK_BYTES; ++j) {
    const int byte = w[j];
    weights[j] = static_cast<int8_t>((byte & 3) - 1);
    weights[32 + j] = static_cast<int8_t>(((byte >> 2) & 3) - 1);
    weights[64 + j] = static_cast<int8_t>(((byte >> 4) & 3) - 1);
    weights[96 + j] = static_cast<int8_t>(((byte >> 6) & 3) - 1);
  }
}

// sum(w * xq) over one block. |w * xq| <= 128, so 128 of them fit int16 exactly: a plain
// 16-bit reduction that compilers vectorize well (SSE2, NEON).
inline int32_t dot_block(const int8_t* weights, const int8_t* xb) {
  int16_t sum = 0;
  for (int i = 0; i < TQ2_BLOCK_K; ++i) {
    sum = static_cast<int16_t>(sum + static_cast<int16_t>(weights[i]) * static_cast<int16_t>(xb[i]));
  }
  return sum;
}

} // namespace

void groups_portable(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                     int64_t n, int64_t g0, int64_t g1) {
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  // acc[t * 4 + r]: running sum(w * xq) of token t, row r of the current group.
  std::vector<int32_t> acc(static_cast<size_t>(a.m) * TQ2_GROUP_ROWS);
  alignas(64) int8_t weights[TQ2_GROUP_ROWS][TQ2_BLOCK_K];
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_BLOCK_BYTES * TQ2_GROUP_ROWS;
    std::fill(acc.begin(), acc.end(), 0);
    for (int64_t b = 0; b < kb; ++b) {
      // Each weight block is unpacked once and used for every token.
      const uint8_t* wb = wg + b * TQ2_BLOCK_BYTES * TQ2_GROUP_ROWS;
#if defined(__GNUC__)
      // Prefetch (never faults) 2 KiB ahead along the weight stream; see tq2_kernel_x86.cpp.
      __builtin_prefetch(wb + 2048);
      __builtin_prefetch(wb + 2048 + 64);
#endif
      for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
        unpack_block(wb + r * TQ2_BLOCK_BYTES, weights[r]);
      }
      for (int64_t t = 0; t < a.m; ++t) {
        const int8_t* xb = a.xq + t * a.kp + b * TQ2_BLOCK_K;
        for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
          acc[t * TQ2_GROUP_ROWS + r] += dot_block(weights[r], xb);
        }
      }
    }
    for (int64_t t = 0; t < a.m; ++t) {
      for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
        const int64_t row = g * TQ2_GROUP_ROWS + r;
        if (row < n) {
          y[t * n + row] = dequant(acc[t * TQ2_GROUP_ROWS + r], a.s[t], scale[row]);
        }
      }
    }
  }
}

} // namespace detail

void tq2_linear_f32(const Tq2Problem& p, Isa isa) {
  if (p.m <= 0 || p.n <= 0) {
    return;
  }
  const int64_t kb = blocks_per_row(p.k);
  const int64_t kp = kb * TQ2_BLOCK_K;
  const int64_t groups = row_groups(p.n);

  // Scratch for the quantized activations, kept per calling thread so decode steps do not
  // allocate. Worker threads only read it.
  thread_local std::vector<int8_t> xq_buf;
  thread_local std::vector<float> s_buf;
  thread_local std::vector<int32_t> sum_buf;
  const size_t xq_size = static_cast<size_t>(p.m * kp) + 64;
  if (xq_buf.size() < xq_size) {
    xq_buf.resize(xq_size);
  }
  if (s_buf.size() < static_cast<size_t>(p.m)) {
    s_buf.resize(p.m);
    sum_buf.resize(p.m);
  }
  // 64-byte aligned start; each token row is a multiple of 128 bytes, so rows stay aligned.
  int8_t* xq = xq_buf.data();
  xq += (64 - (reinterpret_cast<uintptr_t>(xq) & 63)) & 63;

  detail::GroupsFn fn = detail::groups_portable;
#if defined(__x86_64__)
  if (isa >= Isa::kAvx2) {
    detail::quantize_avx2(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  } else {
    detail::quantize_portable(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  }
  if (isa == Isa::kAvx512Vnni) {
    fn = detail::groups_avx512vnni;
  } else if (isa == Isa::kAvx2) {
    fn = detail::groups_avx2;
  }
#else
  (void)isa;
  detail::quantize_portable(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
#endif

  const detail::QuantizedActs acts{xq, s_buf.data(), sum_buf.data(), p.m, kp};
  // Split over row groups. A task gets at least ~64K multiply-adds so that small layers stay on
  // the calling thread; the pool splits larger ranges evenly over its threads.
  const int64_t work_per_group = TQ2_GROUP_ROWS * kp * p.m;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, work_per_group));
  const uint8_t* packed = p.packed;
  const float* scale = p.scale;
  float* y = p.y;
  const int64_t n = p.n;
  executorch::extension::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    fn(acts, packed, scale, y, n, g0, g1);
  });
}

} // namespace tq2
} // namespace bitexport
