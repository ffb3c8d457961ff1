/*
 * bitexport's own kernels for the two ExecuTorch LLM operators a bitexport .pte calls
 * (passes/attention.py), registered for the aarch64 runner:
 *
 *   llama::update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *,
 *                           Tensor(b!) out) -> Tensor(b!)
 *   llama::custom_sdpa.out(Tensor query, Tensor key, Tensor value, SymInt start_pos,
 *                          Tensor? attn_mask=None, float drpout_p=0., bool is_causal=False,
 *                          float? scale=None, *, Tensor(a!) out) -> Tensor(a!)
 *
 * (the schemas of the executorch 1.5.1 wheel's torch.ops.llama). Why our own: the aarch64 wheel
 * carries ExecuTorch's kernels for them only inside libcustom_ops_aot_lib.so, which needs
 * libtorch and Python, so a plain C++ program cannot load them.
 *
 * Layouts, as the x86 operators take them (all contiguous):
 *   cache, key, value caches  [B, S, H_kv, D]   (S = max_seq_len)
 *   update_cache's value      [B, n, H_kv, D]   written to cache positions start_pos .. start_pos+n-1
 *   query, out                [B, n, H, D]      query i sits at absolute position start_pos + i
 * custom_sdpa reads cache positions < start_pos + n only; with is_causal query i attends to the
 * positions <= start_pos + i, without it to all of them. Query head h reads kv head
 * h / (H / H_kv) (grouped-query attention). scale defaults to 1/sqrt(D).
 *
 * dtypes: float32, float16 and bfloat16 (the .pte's --kv-cache), q/k/v/out all of one dtype, as
 * the x86 operators require; update_cache copies bytes and takes any dtype the cache has.
 *
 * Written plainly (float32 accumulation, softmax with the row maximum subtracted): it runs under
 * emulation, where its cost is small beside the linear layers. The x86 kernel sums in another
 * order, so outputs agree to ~1e-6 relative, not bit for bit
 * (tests/runtime_ops/test_emulate_aarch64.py checks against it).
 */
#include "llm_ops.h"

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <cinttypes>
#include <cmath>
#include <cstring>
#include <vector>

namespace bitexport {
namespace llm {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::tensor_is_default_dim_order;

Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                         Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, value.dim() == 4 && cache.dim() == 4, InvalidArgument, out,
                      "update_cache: value and cache must be 4-dimensional [B, seq, heads, head_dim]");
  ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == cache.scalar_type(), InvalidArgument, out,
                      "update_cache: value and cache must have one dtype");
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == cache.size(0) && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3),
                      InvalidArgument, out, "update_cache: value and cache differ outside the seq dimension");
  const int64_t n = value.size(1), s = cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + n <= s, InvalidArgument, out,
                      "update_cache: positions %" PRId64 "..%" PRId64 " do not fit a cache of %" PRId64,
                      start_pos, start_pos + n - 1, s);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(value), InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(cache), InvalidArgument, out);

  // one contiguous run of n rows per batch entry: a row is H_kv * D elements in both tensors
  const size_t row_bytes = static_cast<size_t>(value.size(2) * value.size(3)) * value.element_size();
  const auto* src = static_cast<const uint8_t*>(value.const_data_ptr());
  auto* dst = static_cast<uint8_t*>(cache.mutable_data_ptr());
  for (int64_t b = 0; b < value.size(0); ++b) {
    std::memcpy(dst + (b * s + start_pos) * row_bytes, src + b * n * row_bytes, n * row_bytes);
  }
  // `out` is a placeholder (the x86 operator's meta function gives it one element); the cache
  // is the result, written in place
  return out;
}

// The attention of custom_sdpa on checked inputs, for element type T (float, Half or BFloat16):
// every product and sum in float32, as the x86 operator accumulates; T only at loads and the
// final store (a half-precision cache halves what is read, not the arithmetic's precision).
template <typename T>
bool attend(const Tensor& q, const Tensor& k, const Tensor& v, int64_t start_pos, bool is_causal, float sc,
            Tensor& out) {
  const int64_t batch = q.size(0), n = q.size(1), heads = q.size(2), dim = q.size(3);
  const int64_t s = k.size(1), kv_heads = k.size(2);
  const int64_t group = heads / kv_heads;
  const T* qd = q.const_data_ptr<T>();
  const T* kd = k.const_data_ptr<T>();
  const T* vd = v.const_data_ptr<T>();
  T* od = out.mutable_data_ptr<T>();

  // One work item = one (batch, query, head) row; items are independent, so the split over
  // ExecuTorch's thread pool (the one XNNPACK and the tq2 kernel use) changes no result.
  const int64_t items = batch * n * heads;
  return executorch::extension::parallel_for(0, items, 1, [&](int64_t first, int64_t last) {
    std::vector<float> p(static_cast<size_t>(start_pos + n));
    std::vector<float> acc(static_cast<size_t>(dim));
    for (int64_t item = first; item < last; ++item) {
      const int64_t h = item % heads;
      const int64_t i = (item / heads) % n;
      const int64_t b = item / (heads * n);
      const int64_t kvh = h / group;
      const int64_t visible = is_causal ? start_pos + i + 1 : start_pos + n;
      const T* qrow = qd + ((b * n + i) * heads + h) * dim;
      float m = -INFINITY;
      for (int64_t j = 0; j < visible; ++j) {
        const T* krow = kd + ((b * s + j) * kv_heads + kvh) * dim;
        float dot = 0.0f;
        for (int64_t d = 0; d < dim; ++d) dot += static_cast<float>(qrow[d]) * static_cast<float>(krow[d]);
        p[j] = dot * sc;
        if (p[j] > m) m = p[j];
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        p[j] = std::exp(p[j] - m);
        sum += p[j];
      }
      for (int64_t d = 0; d < dim; ++d) acc[d] = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        const T* vrow = vd + ((b * s + j) * kv_heads + kvh) * dim;
        const float w = p[j] / sum;
        for (int64_t d = 0; d < dim; ++d) acc[d] += w * static_cast<float>(vrow[d]);
      }
      T* orow = od + ((b * n + i) * heads + h) * dim;
      for (int64_t d = 0; d < dim; ++d) orow[d] = static_cast<T>(acc[d]);
    }
  });
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        int64_t start_pos, const std::optional<Tensor>& attn_mask, double dropout_p,
                        bool is_causal, std::optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, !attn_mask.has_value(), InvalidArgument, out,
                      "custom_sdpa: attn_mask is not supported here (bitexport exports use is_causal)");
  ET_KERNEL_CHECK_MSG(ctx, dropout_p == 0.0, InvalidArgument, out, "custom_sdpa: dropout must be 0 at inference");
  ET_KERNEL_CHECK_MSG(ctx, q.dim() == 4 && k.dim() == 4 && v.dim() == 4, InvalidArgument, out,
                      "custom_sdpa: query, key and value must be 4-dimensional [B, seq, heads, head_dim]");
  const ScalarType dtype = q.scalar_type();
  ET_KERNEL_CHECK_MSG(ctx,
                      k.scalar_type() == dtype && v.scalar_type() == dtype && out.scalar_type() == dtype &&
                          (dtype == ScalarType::Float || dtype == ScalarType::Half || dtype == ScalarType::BFloat16),
                      InvalidArgument, out,
                      "custom_sdpa: query, key, value and out must share one dtype: float32, float16 or bfloat16");
  const int64_t batch = q.size(0), n = q.size(1), heads = q.size(2), dim = q.size(3);
  const int64_t s = k.size(1), kv_heads = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx,
                      k.size(0) == batch && v.size(0) == batch && k.size(3) == dim && v.size(3) == dim &&
                          v.size(1) == s && v.size(2) == kv_heads,
                      InvalidArgument, out, "custom_sdpa: key/value caches do not match the query");
  ET_KERNEL_CHECK_MSG(ctx, kv_heads >= 1 && heads % kv_heads == 0, InvalidArgument, out,
                      "custom_sdpa: %" PRId64 " query heads are not a multiple of %" PRId64 " kv heads", heads,
                      kv_heads);
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + n <= s, InvalidArgument, out,
                      "custom_sdpa: positions %" PRId64 "..%" PRId64 " do not fit a cache of %" PRId64, start_pos,
                      start_pos + n - 1, s);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(q), InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(k), InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(v), InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, tensor_is_default_dim_order(out), InvalidArgument, out);
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out,
                      "custom_sdpa: could not resize out to the query's shape");

  const float sc = scale.has_value() ? static_cast<float>(*scale) : 1.0f / std::sqrt(static_cast<float>(dim));
  bool ok = false;
  if (dtype == ScalarType::Float) {
    ok = attend<float>(q, k, v, start_pos, is_causal, sc, out);
  } else if (dtype == ScalarType::Half) {
    ok = attend<executorch::aten::Half>(q, k, v, start_pos, is_causal, sc, out);
  } else {
    ok = attend<executorch::aten::BFloat16>(q, k, v, start_pos, is_causal, sc, out);
  }
  ET_KERNEL_CHECK_MSG(ctx, ok, Internal, out, "custom_sdpa: the thread pool failed");
  return out;
}

}  // namespace llm
}  // namespace bitexport

EXECUTORCH_LIBRARY(llama, "update_cache.out", bitexport::llm::update_cache_out);
EXECUTORCH_LIBRARY(llama, "custom_sdpa.out", bitexport::llm::custom_sdpa_out);
