/*
 * bitexport_a64_runner: greedy decoding of a .pte through ExecuTorch's C++ runtime, the way the
 * LLM runners on phones drive it (TextLLMRunner, Android LlmModule, iOS TextRunner):
 *   forward(tokens int64 [1, n], start_pos int64 [1]) -> logits [1, V] or [1, n, V]
 * once with the whole prompt at position 0, then once per new token. Built for aarch64 against
 * the executorch wheel's shared libraries, with bitexport's tq2 kernels and bitexport's own
 * kernels for the LLM operators (llm_ops.cpp) linked in; runtime_ops/emulate.py runs it under
 * qemu-aarch64.
 *
 *   bitexport_a64_runner MODEL.pte --prompt 5,6,7 [--max-new-tokens 32] [--threads N]
 *                        [--eos 1,2] [--logits-out FILE]
 *
 * stdout: one JSON object {"tokens": [...], "prompt_tokens": n, "prefill_s": s, "decode_s": s,
 * "threads": t, "max_seq_len": m}. On failure: exit status 1 and one line "error: ..." on stderr
 * (ExecuTorch's own log lines, such as "Missing operator: ...", come before it).
 * --logits-out writes each call's last-position logits as raw little-endian float32 rows, so
 * the caller can measure how close a greedy pick was.
 */
#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/core/portable_type/tensor_impl.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

// The wheel does not install extension/threadpool/threadpool.h, only the library that defines
// these (libexecutorch_threadpool.so exports them); declared here as that library's ABI has them.
// Only member functions are called, through the pointer get_threadpool() returns, so no layout of
// ours is ever used.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
using executorch::extension::FileDataLoader;
using executorch::extension::MallocMemoryAllocator;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Result;
using executorch::runtime::Span;

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "error: %s\n", msg.c_str());
  std::exit(1);
}

std::string err_text(Error e) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%x", static_cast<unsigned>(e));
  return buf;
}

std::vector<int64_t> parse_ids(const char* text, const char* what) {
  std::vector<int64_t> out;
  const char* p = text;
  while (*p) {
    char* end = nullptr;
    long long v = std::strtoll(p, &end, 10);
    if (end == p) fail(std::string(what) + " must be comma-separated integers, got '" + text + "'");
    out.push_back(v);
    p = end;
    if (*p == ',') ++p;
  }
  return out;
}

// A loaded method with the memory it plans into. Method keeps pointers into every member, so
// a LoadedMethod never moves once built (held through unique_ptr).
struct LoadedMethod {
  MallocMemoryAllocator method_allocator;
  // Kernels that ask for scratch (XNNPACK) take it from here; it is reset after every call.
  MallocMemoryAllocator temp_allocator;
  std::vector<std::vector<uint8_t>> planned_buffers;
  std::vector<Span<uint8_t>> planned_spans;
  std::unique_ptr<HierarchicalAllocator> planned;
  std::unique_ptr<MemoryManager> memory;
  std::unique_ptr<Method> method;
};

std::unique_ptr<LoadedMethod> load_method(const Program& program, const char* name) {
  auto lm = std::make_unique<LoadedMethod>();
  Result<executorch::runtime::MethodMeta> meta = program.method_meta(name);
  if (!meta.ok()) fail(std::string("the .pte has no method '") + name + "' (" + err_text(meta.error()) + ")");
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    const int64_t size = meta->memory_planned_buffer_size(i).get();
    lm->planned_buffers.emplace_back(static_cast<size_t>(size));
    lm->planned_spans.emplace_back(lm->planned_buffers.back().data(), static_cast<size_t>(size));
  }
  lm->planned = std::make_unique<HierarchicalAllocator>(
      Span<Span<uint8_t>>(lm->planned_spans.data(), lm->planned_spans.size()));
  lm->memory = std::make_unique<MemoryManager>(&lm->method_allocator, lm->planned.get(), &lm->temp_allocator);
  Result<Method> method = program.load_method(name, lm->memory.get());
  if (!method.ok()) {
    // 0x14 (OperatorMissing): ExecuTorch has logged "Missing operator: [i] ns::op" lines above
    fail(std::string("load_method('") + name + "') failed with ExecuTorch error " + err_text(method.error()));
  }
  lm->method = std::make_unique<Method>(std::move(method.get()));
  return lm;
}

// A [1, n] or [1] int64 tensor over caller-owned storage, handed to Method::set_input, which
// copies it into the method's planned input.
struct LongTensor {
  std::vector<int64_t> data;
  executorch::aten::SizesType sizes[2];
  executorch::aten::DimOrderType dim_order[2] = {0, 1};
  executorch::aten::StridesType strides[2];
  std::unique_ptr<TensorImpl> impl;

  LongTensor(std::vector<int64_t> values, bool as_row) : data(std::move(values)) {
    const auto n = static_cast<executorch::aten::SizesType>(data.size());
    ssize_t dim;
    if (as_row) {
      sizes[0] = 1;
      sizes[1] = n;
      strides[0] = n;
      strides[1] = 1;
      dim = 2;
    } else {
      sizes[0] = n;
      strides[0] = 1;
      dim = 1;
    }
    impl = std::make_unique<TensorImpl>(ScalarType::Long, dim, sizes, data.data(), dim_order, strides);
  }
  Tensor tensor() { return Tensor(impl.get()); }
};

struct StepResult {
  int64_t token;
  std::vector<float> last_logits;
};

StepResult step(Method& forward, const std::vector<int64_t>& tokens, int64_t pos, bool keep_logits) {
  LongTensor tok(tokens, /*as_row=*/true);
  LongTensor start({pos}, /*as_row=*/false);
  Error e = forward.set_input(EValue(tok.tensor()), 0);
  if (e != Error::Ok) fail("forward: set_input(tokens) failed with ExecuTorch error " + err_text(e));
  e = forward.set_input(EValue(start.tensor()), 1);
  if (e != Error::Ok) fail("forward: set_input(start_pos) failed with ExecuTorch error " + err_text(e));
  e = forward.execute();
  if (e != Error::Ok) fail("forward: execute failed with ExecuTorch error " + err_text(e));
  const EValue& out = forward.get_output(0);
  if (!out.isTensor()) fail("forward's first output is not a tensor; export the bundle again");
  const Tensor& logits = out.toTensor();
  if (logits.scalar_type() != ScalarType::Float) fail("forward's logits are not float32");
  const int64_t vocab = logits.size(logits.dim() - 1);
  const float* row = logits.const_data_ptr<float>() + (logits.numel() - vocab);
  // the first maximum, as torch.argmax picks it on the desktop runners
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (row[i] > row[best]) best = i;
  }
  StepResult r{best, {}};
  if (keep_logits) r.last_logits.assign(row, row + vocab);
  return r;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const char* pte = nullptr;
  const char* prompt_text = nullptr;
  const char* eos_text = nullptr;
  const char* logits_path = nullptr;
  long max_new = 32;
  long threads = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) fail(a + " needs a value");
      return argv[++i];
    };
    if (a == "--prompt") prompt_text = value();
    else if (a == "--max-new-tokens") max_new = std::strtol(value(), nullptr, 10);
    else if (a == "--threads") threads = std::strtol(value(), nullptr, 10);
    else if (a == "--eos") eos_text = value();
    else if (a == "--logits-out") logits_path = value();
    else if (!a.empty() && a[0] == '-') fail("unknown option " + a);
    else if (!pte) pte = argv[i];
    else fail("more than one .pte given");
  }
  if (!pte || !prompt_text) {
    fail("usage: bitexport_a64_runner MODEL.pte --prompt ID,ID,... [--max-new-tokens N] [--threads N] "
         "[--eos ID,...] [--logits-out FILE]");
  }
  const std::vector<int64_t> prompt = parse_ids(prompt_text, "--prompt");
  const std::vector<int64_t> eos = eos_text ? parse_ids(eos_text, "--eos") : std::vector<int64_t>{};
  if (prompt.empty()) fail("the prompt is empty");
  if (max_new < 0) fail("--max-new-tokens must be >= 0");

  executorch::runtime::runtime_init();
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (threads > 0 && pool && pool->get_thread_count() != static_cast<size_t>(threads)) {
    pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));  // no method runs yet
  }

  Result<FileDataLoader> loader = FileDataLoader::from(pte);
  if (!loader.ok()) fail(std::string("cannot open ") + pte + " (" + err_text(loader.error()) + ")");
  Result<Program> program = Program::load(&loader.get());
  if (!program.ok()) fail(std::string(pte) + " is not a loadable .pte (ExecuTorch error " + err_text(program.error()) + ")");

  int64_t max_seq_len = 0;
  {
    auto meta = load_method(program.get(), "get_max_seq_len");
    Error e = meta->method->execute();
    if (e != Error::Ok || !meta->method->get_output(0).isInt()) fail("get_max_seq_len did not return an int");
    max_seq_len = meta->method->get_output(0).toInt();
  }
  auto forward = load_method(program.get(), "forward");

  if (static_cast<int64_t>(prompt.size()) >= max_seq_len) {
    fail("the prompt has " + std::to_string(prompt.size()) + " tokens; this .pte holds " +
         std::to_string(max_seq_len) + " positions");
  }
  const int64_t budget = std::min<int64_t>(max_new, max_seq_len - static_cast<int64_t>(prompt.size()));

  FILE* logits_file = nullptr;
  if (logits_path) {
    logits_file = std::fopen(logits_path, "wb");
    if (!logits_file) fail(std::string("cannot write ") + logits_path);
  }
  auto record = [&](const StepResult& r) {
    if (logits_file) std::fwrite(r.last_logits.data(), sizeof(float), r.last_logits.size(), logits_file);
  };
  auto is_eos = [&](int64_t t) {
    for (int64_t e : eos) {
      if (e == t) return true;
    }
    return false;
  };

  // the loop of bitexport.model.generate.timed_greedy, so timings mean the same on every runner
  std::vector<int64_t> out;
  double prefill_s = 0.0, decode_s = 0.0;
  if (budget > 0) {
    auto t0 = std::chrono::steady_clock::now();
    StepResult r = step(*forward->method, prompt, 0, logits_file != nullptr);
    prefill_s = seconds_since(t0);
    record(r);
    out.push_back(r.token);
    t0 = std::chrono::steady_clock::now();
    int64_t pos = static_cast<int64_t>(prompt.size());
    while (static_cast<int64_t>(out.size()) < budget && !is_eos(out.back())) {
      r = step(*forward->method, {out.back()}, pos, logits_file != nullptr);
      record(r);
      out.push_back(r.token);
      ++pos;
    }
    decode_s = seconds_since(t0);
  }
  if (logits_file) std::fclose(logits_file);

  std::printf("{\"tokens\": [");
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%" PRId64, i ? ", " : "", out[i]);
  std::printf("], \"prompt_tokens\": %zu, \"prefill_s\": %.6f, \"decode_s\": %.6f, \"threads\": %zu, "
              "\"max_seq_len\": %" PRId64 "}\n",
              prompt.size(), prefill_s, decode_s, pool ? pool->get_thread_count() : size_t{1}, max_seq_len);
  return 0;
}
