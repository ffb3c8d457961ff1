/*
 * ExecuTorch registration of bitexport::tq2_linear.out (schema: runtime_ops/ops.py):
 *   tq2_linear.out(Tensor x, Tensor packed_weight, Tensor weight_scale, int out_features, *,
 *                  Tensor(a!) out) -> Tensor(a!)
 * x float32 [..., K], packed_weight uint8 [ceil(N/4), ceil(K/128)*128] (tq2_layout.h),
 * weight_scale float32 [N], out float32 [..., N] (resized here).
 */
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include "tq2_kernel.h"
#include "tq2_layout.h"

namespace bitexport {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

Tensor& tq2_linear_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& packed_weight,
                       const Tensor& weight_scale, int64_t out_features, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "tq2_linear: x must be float32");
  ET_KERNEL_CHECK_MSG(ctx, packed_weight.scalar_type() == ScalarType::Byte, InvalidArgument, out,
                      "tq2_linear: packed_weight must be uint8");
  ET_KERNEL_CHECK_MSG(ctx, weight_scale.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "tq2_linear: weight_scale must be float32");
  ET_KERNEL_CHECK_MSG(ctx, out.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "tq2_linear: out must be float32");
  ET_KERNEL_CHECK_MSG(ctx, x.dim() >= 1 && x.dim() <= 8, InvalidArgument, out,
                      "tq2_linear: x must have 1 to 8 dimensions");
  const int64_t k = x.size(x.dim() - 1);
  const int64_t n = out_features;
  ET_KERNEL_CHECK_MSG(ctx, k >= 1 && k <= tq2::kMaxK, InvalidArgument, out,
                      "tq2_linear: in_features %" PRId64 " out of range", k);
  ET_KERNEL_CHECK_MSG(ctx, n >= 1, InvalidArgument, out, "tq2_linear: out_features must be >= 1");
  ET_KERNEL_CHECK_MSG(
      ctx,
      packed_weight.dim() == 2 && packed_weight.size(0) == tq2::row_groups(n) &&
          packed_weight.size(1) == tq2::group_bytes(k),
      InvalidArgument, out,
      "tq2_linear: packed_weight must be [%" PRId64 ", %" PRId64 "] for N=%" PRId64
      ", K=%" PRId64,
      tq2::row_groups(n), tq2::group_bytes(k), n, k);
  ET_KERNEL_CHECK_MSG(ctx, weight_scale.numel() == n, InvalidArgument, out,
                      "tq2_linear: weight_scale must have out_features elements");
  ET_KERNEL_CHECK(ctx, executorch::runtime::tensor_is_default_dim_order(x), InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, executorch::runtime::tensor_is_default_dim_order(packed_weight),
                  InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, executorch::runtime::tensor_is_default_dim_order(out), InvalidArgument,
                  out);

  SizesType sizes[8];
  for (int64_t d = 0; d + 1 < x.dim(); ++d) {
    sizes[d] = x.size(d);
  }
  sizes[x.dim() - 1] = static_cast<SizesType>(n);
  ET_KERNEL_CHECK_MSG(
      ctx,
      executorch::runtime::resize_tensor(
          out, executorch::aten::ArrayRef<SizesType>(sizes, static_cast<size_t>(x.dim()))) ==
          Error::Ok,
      InvalidArgument, out, "tq2_linear: could not resize out");

  const int64_t m = x.numel() / k;
  tq2::Tq2Problem p{x.const_data_ptr<float>(),
                    packed_weight.const_data_ptr<uint8_t>(),
                    weight_scale.const_data_ptr<float>(),
                    out.mutable_data_ptr<float>(),
                    m,
                    k,
                    n};
  tq2::tq2_linear_f32(p, tq2::selected_isa());
  return out;
}

} // namespace
} // namespace bitexport

EXECUTORCH_LIBRARY(bitexport, "tq2_linear.out", bitexport::tq2_linear_out);
