/*
 * bitexport_a64_llm_ops_check: runs llm_ops.cpp's kernels on inputs written by a test, the way
 * one attention layer of a bitexport .pte calls them, so that tests/runtime_ops/
 * test_emulate_aarch64.py can compare them with the x86 torch.ops.llama operators:
 *
 *   bitexport_a64_llm_ops_check DIR
 *
 * DIR/case.txt: "B n S H H_kv D start_pos is_causal scale [dtype]" (scale "none" for the default;
 * dtype f32 (default), f16 or bf16: the tensors the kernels see, converted from the float32 files
 * and back, as a .pte exported with --kv-cache fp16|bf16 hands them over);
 * DIR/{q,k_new,v_new,k_cache,v_cache}.bin: raw little-endian float32, contiguous, shaped
 * q [B,n,H,D], k_new/v_new [B,n,H_kv,D], caches [B,S,H_kv,D].
 * Runs update_cache(k_new -> k_cache), update_cache(v_new -> v_cache), then
 * custom_sdpa(q, k_cache, v_cache, start_pos, None, 0, is_causal, scale) and writes
 * DIR/{k_cache,v_cache,out}.result.bin. A kernel that rejects its inputs: exit status 1 and
 * "error: ..." on stderr.
 */
#include "llm_ops.h"

#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/core/portable_type/tensor_impl.h>
#include <executorch/runtime/platform/runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::exit(1);
}

// A contiguous float32 tensor over its own storage.
struct FloatTensor {
  std::vector<float> data;
  std::vector<executorch::aten::SizesType> sizes;
  std::vector<executorch::aten::DimOrderType> dim_order;
  std::vector<executorch::aten::StridesType> strides;
  std::unique_ptr<TensorImpl> impl;

  explicit FloatTensor(std::vector<executorch::aten::SizesType> shape) : sizes(std::move(shape)) {
    size_t numel = 1;
    for (auto s : sizes) numel *= static_cast<size_t>(s);
    data.assign(numel, 0.0f);
    strides.assign(sizes.size(), 1);
    for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * sizes[d];
    for (size_t d = 0; d < sizes.size(); ++d) dim_order.push_back(static_cast<executorch::aten::DimOrderType>(d));
    impl = std::make_unique<TensorImpl>(ScalarType::Float, static_cast<ssize_t>(sizes.size()), sizes.data(),
                                        data.data(), dim_order.data(), strides.data());
  }
  Tensor tensor() { return Tensor(impl.get()); }
};

// The same values as a contiguous tensor of `dtype` (Float, Half or BFloat16), and back.
struct TypedTensor {
  ScalarType dtype;
  std::vector<float> f32;
  std::vector<executorch::aten::Half> f16;
  std::vector<executorch::aten::BFloat16> bf16;
  std::unique_ptr<TensorImpl> impl;

  TypedTensor(FloatTensor& src, ScalarType st) : dtype(st) {
    void* data = nullptr;
    if (st == ScalarType::Half) {
      for (float x : src.data) f16.emplace_back(x);
      data = f16.data();
    } else if (st == ScalarType::BFloat16) {
      for (float x : src.data) bf16.emplace_back(x);
      data = bf16.data();
    } else {
      f32 = src.data;
      data = f32.data();
    }
    impl = std::make_unique<TensorImpl>(st, static_cast<ssize_t>(src.sizes.size()), src.sizes.data(), data,
                                        src.dim_order.data(), src.strides.data());
  }
  Tensor tensor() { return Tensor(impl.get()); }
  std::vector<float> to_float() const {
    if (dtype == ScalarType::Half) return std::vector<float>(f16.begin(), f16.end());
    if (dtype == ScalarType::BFloat16) return std::vector<float>(bf16.begin(), bf16.end());
    return f32;
  }
};

void read_into(const std::string& path, FloatTensor& t) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot read " + path);
  const size_t got = std::fread(t.data.data(), sizeof(float), t.data.size(), f);
  std::fclose(f);
  if (got != t.data.size()) fail(path + " holds fewer floats than its shape needs");
}

void write_from(const std::string& path, const float* data, size_t count) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, sizeof(float), count, f) != count) fail("cannot write " + path);
  std::fclose(f);
}

void check(const KernelRuntimeContext& ctx, const char* what) {
  if (ctx.failure_state() != Error::Ok) {
    fail(std::string(what) + " rejected its inputs (ExecuTorch error " +
         std::to_string(static_cast<int>(ctx.failure_state())) + ")");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: bitexport_a64_llm_ops_check DIR");
  executorch::runtime::runtime_init();
  const std::string dir = argv[1];
  FILE* f = std::fopen((dir + "/case.txt").c_str(), "r");
  if (!f) fail("cannot read " + dir + "/case.txt");
  int b, n, s, h, hkv, d, causal;
  long long start;
  char scale_text[64], dtype_text[8] = "f32";
  const int got = std::fscanf(f, "%d %d %d %d %d %d %lld %d %63s %7s", &b, &n, &s, &h, &hkv, &d, &start, &causal,
                              scale_text, dtype_text);
  std::fclose(f);
  if (got != 9 && got != 10) fail("case.txt must hold: B n S H H_kv D start_pos is_causal scale [dtype]");
  ScalarType dtype = ScalarType::Float;
  if (std::strcmp(dtype_text, "f16") == 0) {
    dtype = ScalarType::Half;
  } else if (std::strcmp(dtype_text, "bf16") == 0) {
    dtype = ScalarType::BFloat16;
  } else if (std::strcmp(dtype_text, "f32") != 0) {
    fail(std::string("dtype ") + dtype_text + " is not one of f32, f16, bf16");
  }
  std::optional<double> scale;
  if (std::strcmp(scale_text, "none") != 0) scale = std::strtod(scale_text, nullptr);

  FloatTensor q({b, n, h, d}), k_new({b, n, hkv, d}), v_new({b, n, hkv, d});
  FloatTensor k_cache({b, s, hkv, d}), v_cache({b, s, hkv, d}), out({b, n, h, d}), placeholder({1});
  read_into(dir + "/q.bin", q);
  read_into(dir + "/k_new.bin", k_new);
  read_into(dir + "/v_new.bin", v_new);
  read_into(dir + "/k_cache.bin", k_cache);
  read_into(dir + "/v_cache.bin", v_cache);

  TypedTensor tq(q, dtype), tk_new(k_new, dtype), tv_new(v_new, dtype), tk_cache(k_cache, dtype),
      tv_cache(v_cache, dtype), tout(out, dtype);
  KernelRuntimeContext ctx;
  Tensor kc = tk_cache.tensor(), vc = tv_cache.tensor(), o = tout.tensor(), ph = placeholder.tensor();
  bitexport::llm::update_cache_out(ctx, tk_new.tensor(), kc, start, ph);
  check(ctx, "update_cache(k)");
  bitexport::llm::update_cache_out(ctx, tv_new.tensor(), vc, start, ph);
  check(ctx, "update_cache(v)");
  bitexport::llm::custom_sdpa_out(ctx, tq.tensor(), kc, vc, start, std::nullopt, 0.0, causal != 0, scale, o);
  check(ctx, "custom_sdpa");

  for (auto [name, t] : {std::pair<const char*, TypedTensor*>{"k_cache", &tk_cache}, {"v_cache", &tv_cache},
                         {"out", &tout}}) {
    const std::vector<float> values = t->to_float();
    write_from(dir + "/" + name + ".result.bin", values.data(), values.size());
  }
  return 0;
}
