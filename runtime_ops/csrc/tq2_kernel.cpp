/*
 * tq2 linear: the portable path, the per-call driver (activation quantization, thread split) and
 * the run-time choice of instruction set. x86 code lives in tq2_kernel_x86.cpp only, ARM code in
 * tq2_kernel_arm.cpp only; this file builds unchanged for any target.
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
    case Isa::kNeon:
      return "neon";
    case Isa::kNeonDotprod:
      return "neon_dotprod";
    case Isa::kNeonI8mm:
      return "neon_i8mm";
  }
  return "portable";
}

bool parse_isa(const char* name, Isa* isa) {
  static constexpr Isa kAll[] = {Isa::kPortable, Isa::kAvx2,        Isa::kAvx512Vnni,
                                 Isa::kNeon,     Isa::kNeonDotprod, Isa::kNeonI8mm};
  if (name == nullptr) {
    return false;
  }
  for (const Isa candidate : kAll) {
    if (std::strcmp(name, isa_name(candidate)) == 0) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return detail::cpu_has_avx2();
    case Isa::kAvx512Vnni:
      return detail::cpu_has_avx512vnni();
#endif
#if defined(__aarch64__)
    case Isa::kNeon:
      return true;  // Advanced SIMD is part of every AArch64 core (the ABI assumes it)
    case Isa::kNeonDotprod:
      return detail::cpu_has_neon_dotprod();
    case Isa::kNeonI8mm:
      return detail::cpu_has_neon_i8mm();
#endif
    default:
      return false;
  }
}

namespace {

// The next path down the same ladder (tq2_kernel.h); portable is the bottom of both.
Isa step_down(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni:
      return Isa::kAvx2;
    case Isa::kNeonI8mm:
      return Isa::kNeonDotprod;
    case Isa::kNeonDotprod:
      return Isa::kNeon;
    default:
      return Isa::kPortable;
  }
}

Isa best_of_ladder(Isa top) {
  while (!isa_supported(top)) {
    top = step_down(top);
  }
  return top;
}

} // namespace

Isa best_supported_isa() {
#if defined(__x86_64__)
  static const Isa best = best_of_ladder(Isa::kAvx512Vnni);
#elif defined(__aarch64__)
  static const Isa best = best_of_ladder(Isa::kNeonI8mm);
#else
  static const Isa best = Isa::kPortable;
#endif
  return best;
}

Isa selected_isa() {
  const char* env = std::getenv("BITEXPORT_TQ2_ISA");
  Isa wanted = Isa::kPortable;
  if (env == nullptr || !parse_isa(env, &wanted)) {
    return best_supported_isa();  // unset, empty, "auto" or unknown
  }
  return best_of_ladder(wanted);
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
    s[t] = st;
    xsum[t] = quantize_scalar(xr, st, qr, 0, k, kp);
  }
}

namespace {

// Unpacks the 32-byte block of one row into its 128 weights (-1, 0, +1) in K order.
inline void unpack_block(const uint8_t* w, int8_t* weights) {
  for (int j = 0; j < TQ2_CHUNK_K; ++j) {
    const int byte = w[j];
    for (int q = 0; q < TQ2_CHUNKS; ++q) {
      weights[q * TQ2_CHUNK_K + j] =
          static_cast<int8_t>(((byte >> (TQ2_CODE_BITS * q)) & TQ2_CODE_MASK) - 1);
    }
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
  // Tokens go kTile at a time, so the accumulators live on the stack (no allocation per call,
  // whatever m); a group's unpacked weights are redone once per tile, a small cost next to the
  // kTile * 4 * 128 multiply-adds that use them.
  constexpr int64_t kTile = 16;
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  int32_t acc[kTile][TQ2_GROUP_ROWS];  // running sum(w * xq) of token t0 + t, row r of the group
  alignas(64) int8_t weights[TQ2_GROUP_ROWS][TQ2_BLOCK_K];
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* wg = packed + g * kb * TQ2_GROUP_BLOCK_BYTES;
    for (int64_t t0 = 0; t0 < a.m; t0 += kTile) {
      const int64_t tiles = std::min(kTile, a.m - t0);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t b = 0; b < kb; ++b) {
        const uint8_t* wb = wg + b * TQ2_GROUP_BLOCK_BYTES;
#if defined(__GNUC__)
        // Prefetch (never faults) 2 KiB ahead along the weight stream; see tq2_kernel_x86.cpp.
        __builtin_prefetch(wb + 2048);
        __builtin_prefetch(wb + 2048 + 64);
#endif
        for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
          unpack_block(wb + r * TQ2_BLOCK_BYTES, weights[r]);
        }
        for (int64_t t = 0; t < tiles; ++t) {
          const int8_t* xb = a.xq + (t0 + t) * a.kp + b * TQ2_BLOCK_K;
          for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
            acc[t][r] += dot_block(weights[r], xb);
          }
        }
      }
      for (int64_t t = 0; t < tiles; ++t) {
        for (int r = 0; r < TQ2_GROUP_ROWS; ++r) {
          const int64_t row = g * TQ2_GROUP_ROWS + r;
          if (row < n) {
            y[(t0 + t) * n + row] = dequant(acc[t][r], a.s[t0 + t], scale[row]);
          }
        }
      }
    }
  }
}

void gemm_task(const GemmKernel& kernel, const QuantizedActs& a, const uint8_t* packed,
               const float* scale, float* y, int64_t n, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1) {
  const int64_t kb = a.kp / TQ2_BLOCK_K;
  // K chunks of equal size (at most kGemmMaxChunkBlocks blocks): 20 blocks go as 10 + 10, not
  // 15 + 5, so no chunk is mostly loop overhead.
  const int64_t chunks = (kb + kGemmMaxChunkBlocks - 1) / kGemmMaxChunkBlocks;
  const int64_t chunk = (kb + chunks - 1) / chunks;
  const int64_t gbytes = kb * TQ2_GROUP_BLOCK_BYTES;
  // int32 dots of the row block's rows x the tile's tokens, summed over the K chunks.
  int32_t acc[kGemmRowBlockGroups * TQ2_GROUP_ROWS][kGemmTokens];
  for (int64_t tt = t0; tt < t1; tt += kGemmTokens) {
    const int tokens = static_cast<int>(std::min<int64_t>(kGemmTokens, t1 - tt));
    std::memset(acc, 0, sizeof(acc[0]) * static_cast<size_t>((g1 - g0) * TQ2_GROUP_ROWS));
    for (int64_t c0 = 0; c0 < kb; c0 += chunk) {
      const int64_t nb = std::min(chunk, kb - c0);
      const int8_t* x = a.xq + tt * a.kp + c0 * TQ2_BLOCK_K;
      for (int64_t g = g0; g < g1; ++g) {
        const uint8_t* wg = packed + g * gbytes + c0 * TQ2_GROUP_BLOCK_BYTES;
        for (int r = 0; r < TQ2_GROUP_ROWS; r += kernel.rows_per_tile) {
          kernel.tile(wg + r * TQ2_BLOCK_BYTES, nb, x, a.kp, tokens,
                      acc[(g - g0) * TQ2_GROUP_ROWS + r]);
        }
      }
    }
    for (int t = 0; t < tokens; ++t) {
      const int64_t tok = tt + t;
      const int64_t row_end = std::min(n, g1 * TQ2_GROUP_ROWS);
      float* yt = y + tok * n;
      for (int64_t row = g0 * TQ2_GROUP_ROWS; row < row_end; ++row) {
        yt[row] = dequant(acc[row - g0 * TQ2_GROUP_ROWS][t] - a.xsum[tok], a.s[tok], scale[row]);
      }
    }
  }
}

} // namespace detail

namespace {

// The 2-D grid of a GEMM: row blocks of `rb` groups x token blocks of `tb` tokens.
struct GemmGrid {
  int64_t rb;
  int64_t tb;
  int64_t row_blocks;
  int64_t token_blocks;
};

[[maybe_unused]] GemmGrid gemm_grid(int64_t groups, int64_t m, int64_t threads) {
  GemmGrid grid{};
  // Token blocks of up to 64 tokens (a multiple of the tile); row blocks of up to 16 groups,
  // smaller when that is needed for every thread to get at least 4 tasks.
  constexpr int64_t kTokenBlock = 8 * detail::kGemmTokens;
  grid.token_blocks = (m + kTokenBlock - 1) / kTokenBlock;
  grid.tb = (m + grid.token_blocks - 1) / grid.token_blocks;
  grid.tb = (grid.tb + detail::kGemmTokens - 1) / detail::kGemmTokens * detail::kGemmTokens;
  grid.token_blocks = (m + grid.tb - 1) / grid.tb;
  const int64_t want_tasks = 4 * std::max<int64_t>(1, threads);
  int64_t row_blocks = (groups + detail::kGemmRowBlockGroups - 1) / detail::kGemmRowBlockGroups;
  const int64_t for_threads = (want_tasks + grid.token_blocks - 1) / grid.token_blocks;
  row_blocks = std::min(groups, std::max(row_blocks, for_threads));
  grid.rb = (groups + row_blocks - 1) / row_blocks;
  grid.row_blocks = (groups + grid.rb - 1) / grid.rb;
  return grid;
}

// Quantizes the m tokens over the thread pool (tokens are independent).
[[maybe_unused]] void quantize_parallel(detail::QuantizeFn fn, const float* x, int64_t m, int64_t k, int64_t kp,
                       int8_t* xq, float* s, int32_t* xsum) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / k);
  executorch::extension::parallel_for(0, m, grain, [&](int64_t t0, int64_t t1) {
    fn(x + t0 * k, t1 - t0, k, kp, xq + t0 * kp, s + t0, xsum + t0);
  });
}

} // namespace

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
  const int8_t* pairs = nullptr;
#if defined(__x86_64__)
  if (isa == Isa::kAvx2 || isa == Isa::kAvx512Vnni) {
    if (p.m >= 2) {
      // Prefill: the token-blocked GEMM over a 2-D grid (row blocks x token blocks).
      quantize_parallel(detail::quantize_avx2, p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
      const detail::GemmKernel kernel = isa == Isa::kAvx512Vnni ? detail::gemm_kernel_avx512vnni()
                                                                : detail::gemm_kernel_avx2();
      const detail::QuantizedActs acts{xq, s_buf.data(), sum_buf.data(), p.m, kp, nullptr};
      const GemmGrid grid = gemm_grid(groups, p.m, executorch::extension::get_thread_count());
      // A task is at least ~64K multiply-adds, so small layers stay on the calling thread.
      const int64_t task_work = grid.rb * TQ2_GROUP_ROWS * kp * grid.tb;
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, task_work));
      // Row-block major: a thread takes the token blocks of one row block in a row, so the
      // block's weights come from DRAM once and from L2 after that.
      executorch::extension::parallel_for(
          0, grid.row_blocks * grid.token_blocks, grain, [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) {
              const int64_t rbi = i / grid.token_blocks;
              const int64_t tbi = i % grid.token_blocks;
              const int64_t g0 = rbi * grid.rb;
              const int64_t t0 = tbi * grid.tb;
              detail::gemm_task(kernel, acts, p.packed, p.scale, p.y, p.n, g0,
                                std::min(groups, g0 + grid.rb), t0, std::min(p.m, t0 + grid.tb));
            }
          });
      return;
    }
    detail::quantize_avx2(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  } else {
    detail::quantize_portable(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  }
  // One token (decode): the GEMV paths, split over row groups below.
  if (isa == Isa::kAvx512Vnni) {
    fn = detail::groups_avx512vnni;
  } else if (isa == Isa::kAvx2) {
    fn = detail::groups_avx2;
  }
#elif defined(__aarch64__)
  if (isa == Isa::kNeon || isa == Isa::kNeonDotprod || isa == Isa::kNeonI8mm) {
    detail::quantize_neon(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  } else {
    detail::quantize_portable(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
  }
  if (isa == Isa::kNeonI8mm) {
    fn = detail::groups_neon_i8mm;
    if (p.m >= 2) {
      thread_local std::vector<int8_t> pair_buf;
      const size_t pair_size = static_cast<size_t>(detail::pair_bytes(p.m, kp)) + 64;
      if (pair_buf.size() < pair_size) {
        pair_buf.resize(pair_size);
      }
      int8_t* pb = pair_buf.data();
      pb += (64 - (reinterpret_cast<uintptr_t>(pb) & 63)) & 63;
      detail::pair_tokens_neon(xq, p.m, kp, pb);
      pairs = pb;
    }
  } else if (isa == Isa::kNeonDotprod) {
    fn = detail::groups_neon_dotprod;
  } else if (isa == Isa::kNeon) {
    fn = detail::groups_neon;
  }
#else
  (void)isa;
  detail::quantize_portable(p.x, p.m, p.k, kp, xq, s_buf.data(), sum_buf.data());
#endif

  const detail::QuantizedActs acts{xq, s_buf.data(), sum_buf.data(), p.m, kp, pairs};
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
