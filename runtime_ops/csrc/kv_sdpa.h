/*
 * bitexport::kv_sdpa: causal attention of n new query tokens over a KV cache, for decoding.
 *
 * Same contract as ExecuTorch's llama::custom_sdpa(q, k_cache, v_cache, start_pos, None, 0, True),
 * which the tq2 bundles replace with it: measured on x86 (bitnet_b1_58-large, 16 heads x 96, one
 * query token), custom_sdpa streamed its fp32 cache at 6-8 GB/s and ran slower on 2 threads than
 * on 1; this kernel gives each thread whole heads and reads every cache row once.
 *
 *   q        float32 [1, n, H, D]
 *   k_cache  float32 [1, S, Hkv, D]   (positions 0 .. start_pos + n - 1 are valid)
 *   v_cache  float32 [1, S, Hkv, D]
 *   out      float32 [1, n, H, D]
 *   query i (position start_pos + i) of head h attends to keys 0 .. start_pos + i of KV head
 *   h / (H / Hkv), with scale 1 / sqrt(D) and a max-subtracted softmax in float32.
 *
 * Plain C++ and ExecuTorch's parallel_for only, so it builds for every target the tq2 kernel does.
 */
#pragma once

#include <cstdint>

namespace bitexport {
namespace attn {

struct KvSdpaProblem {
  const float* q;        // [n, heads, head_dim]
  const float* k_cache;  // [max_seq, kv_heads, head_dim]
  const float* v_cache;  // [max_seq, kv_heads, head_dim]
  float* out;            // [n, heads, head_dim]
  int64_t n;
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  int64_t start_pos;
  int64_t max_seq;
};

// Requires heads % kv_heads == 0 and start_pos + n <= max_seq (callers check).
void kv_sdpa_f32(const KvSdpaProblem& p);

} // namespace attn
} // namespace bitexport
