/*
 * Plain C entry points into the tq2 kernel, for the micro-benchmarks (`bitexport bench --kernels`,
 * export/bitexport/bench/kernels.py; runtime_ops/bench_kernel.py)
 * and for checks from Python through ctypes. Not needed by an application, which reaches the
 * kernel through the ExecuTorch operator.
 */
#include <chrono>
#include <cstring>

#include "tq2_kernel.h"

namespace {

bitexport::tq2::Isa isa_from_name(const char* name, bool* ok) {
  bitexport::tq2::Isa isa = bitexport::tq2::Isa::kPortable;
  if (name == nullptr || std::strcmp(name, "auto") == 0) {
    *ok = true;
    return bitexport::tq2::best_supported_isa();
  }
  *ok = bitexport::tq2::parse_isa(name, &isa);
  return isa;
}

} // namespace

extern "C" {

// Name of the best path this CPU supports ("portable", "avx2", "avx512vnni", "neon",
// "neon_dotprod", "neon_i8mm").
__attribute__((visibility("default"))) const char* bitexport_tq2_best_isa() {
  return bitexport::tq2::isa_name(bitexport::tq2::best_supported_isa());
}

// Name of the path the operator uses now (after BITEXPORT_TQ2_ISA).
__attribute__((visibility("default"))) const char* bitexport_tq2_selected_isa() {
  return bitexport::tq2::isa_name(bitexport::tq2::selected_isa());
}

// y[m, n] = tq2_linear(x[m, k]) with the named path, `iters` times; returns the mean seconds per
// call, or -1 if the path is unknown, this CPU lacks it, or a size is out of range.
__attribute__((visibility("default"))) double bitexport_tq2_linear_f32(
    const float* x, const uint8_t* packed, const float* scale, float* y, int64_t m, int64_t k,
    int64_t n, const char* isa_name, int64_t iters) {
  bool ok = false;
  const bitexport::tq2::Isa isa = isa_from_name(isa_name, &ok);
  if (!ok || !bitexport::tq2::isa_supported(isa) ||
      k < 1 || k > bitexport::tq2::kMaxK || m < 0 || n < 1) {
    return -1.0;
  }
  const bitexport::tq2::Tq2Problem p{x, packed, scale, y, m, k, n};
  if (iters < 1) {
    iters = 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    bitexport::tq2::tq2_linear_f32(p, isa);
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count() / static_cast<double>(iters);
}

// The same, cycling through `copies` copies of the packed weights laid `copy_stride` bytes apart
// from `packed` (call i uses copy i % copies): with more bytes of copies than the last-level
// cache holds, every call reads its weights from DRAM, as a decode step of a whole model does.
__attribute__((visibility("default"))) double bitexport_tq2_linear_f32_rotate(
    const float* x, const uint8_t* packed, int64_t copy_stride, int64_t copies, const float* scale,
    float* y, int64_t m, int64_t k, int64_t n, const char* isa_name, int64_t iters) {
  bool ok = false;
  const bitexport::tq2::Isa isa = isa_from_name(isa_name, &ok);
  if (!ok || !bitexport::tq2::isa_supported(isa) || k < 1 || k > bitexport::tq2::kMaxK ||
      m < 0 || n < 1 || copies < 1 || copy_stride < 0) {
    return -1.0;
  }
  if (iters < 1) {
    iters = 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    const bitexport::tq2::Tq2Problem p{x, packed + (i % copies) * copy_stride, scale, y, m, k, n};
    bitexport::tq2::tq2_linear_f32(p, isa);
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count() / static_cast<double>(iters);
}

} // extern "C"
