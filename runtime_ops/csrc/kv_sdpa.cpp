#include "kv_sdpa.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace bitexport {
namespace attn {
namespace {

// Eight independent partial sums: the compiler vectorizes them without reassociating a single
// sum (this file keeps -ffp-contract=off / no fast-math like the rest of runtime_ops).
inline float dot(const float* a, const float* b, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t x = 0;
  for (; x + 8 <= d; x += 8) {
    for (int j = 0; j < 8; ++j) {
      acc[j] += a[x + j] * b[x + j];
    }
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; x < d; ++x) {
    s += a[x] * b[x];
  }
  return s;
}

inline void axpy(float* y, float w, const float* x, int64_t d) {
  for (int64_t i = 0; i < d; ++i) {
    y[i] += w * x[i];
  }
}

} // namespace

void kv_sdpa_f32(const KvSdpaProblem& p) {
  const int64_t d = p.head_dim;
  const int64_t rep = p.heads / p.kv_heads;
  const int64_t row = p.kv_heads * d;  // floats between two positions of one cache
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t keys_max = p.start_pos + p.n;
  // One task = one (query token, head); a decode step has `heads` tasks, split evenly.
  executorch::extension::parallel_for(0, p.n * p.heads, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> w;
    if (w.size() < static_cast<size_t>(keys_max)) {
      w.resize(keys_max);
    }
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / p.heads;
      const int64_t h = t % p.heads;
      const int64_t hk = h / rep;
      const int64_t keys = p.start_pos + i + 1;
      const float* q = p.q + (i * p.heads + h) * d;
      const float* k = p.k_cache + hk * d;
      const float* v = p.v_cache + hk * d;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < keys; ++j) {
        w[j] = dot(q, k + j * row, d) * scale;
        m = std::max(m, w[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < keys; ++j) {
        w[j] = std::exp(w[j] - m);
        sum += w[j];
      }
      float* o = p.out + (i * p.heads + h) * d;
      std::fill(o, o + d, 0.0f);
      for (int64_t j = 0; j < keys; ++j) {
        axpy(o, w[j], v + j * row, d);
      }
      const float inv = 1.0f / sum;
      for (int64_t x = 0; x < d; ++x) {
        o[x] *= inv;
      }
    }
  });
}

} // namespace attn
} // namespace bitexport
