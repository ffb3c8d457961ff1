/*
 * The tq2 linear kernel: y[M, N] = tq2_linear(x[M, K], packed, weight_scale).
 * Layout and arithmetic: tq2_layout.h. Plain C++ interface, no ExecuTorch types, so the same code
 * serves the ExecuTorch operator (tq2_op_executorch.cpp) and the C entry points (tq2_c_api.cpp).
 */
#pragma once

#include <cstdint>

namespace bitexport {
namespace tq2 {

// Instruction-set paths, in increasing order of preference.
enum class Isa : int {
  kPortable = 0,    // plain C++, any CPU
  kAvx2 = 1,        // x86-64 AVX2 (vpmaddubsw)
  kAvx512Vnni = 2,  // x86-64 AVX-512 F/BW/VL + VNNI (vpdpbusd)
};

const char* isa_name(Isa isa);

// Best path this CPU supports (CPUID, checked once).
Isa best_supported_isa();

// Path the next call will use: BITEXPORT_TQ2_ISA (portable | avx2 | avx512vnni | auto, read on
// every call) capped at what the CPU supports; unset or "auto" means the best supported one.
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
};

// Per-token quantization (tq2_layout.h) of x[m, k] into xq[m, kp], s[m], xsum[m].
void quantize_portable(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                       int32_t* xsum);

// Computes output rows of row groups [g0, g1) for all tokens.
using GroupsFn = void (*)(const QuantizedActs& a, const uint8_t* packed, const float* scale,
                          float* y, int64_t n, int64_t g0, int64_t g1);

void groups_portable(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                     int64_t n, int64_t g0, int64_t g1);

#if defined(__x86_64__)
void quantize_avx2(const float* x, int64_t m, int64_t k, int64_t kp, int8_t* xq, float* s,
                   int32_t* xsum);
void groups_avx2(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                 int64_t n, int64_t g0, int64_t g1);
void groups_avx512vnni(const QuantizedActs& a, const uint8_t* packed, const float* scale, float* y,
                       int64_t n, int64_t g0, int64_t g1);
bool cpu_has_avx2();
bool cpu_has_avx512vnni();
#endif

// The output step shared by every path: y = ((float)acc / s) * scale, written so that no
// compiler contracts it (the sources are also built with -ffp-contract=off).
inline float dequant(int32_t acc, float s, float scale) {
  const float a = static_cast<float>(acc) / s;
  return a * scale;
}

} // namespace detail
} // namespace tq2
} // namespace bitexport
