"""A phone performance model for decode and prefill: a MODEL, not a measurement.

No phone is reachable from this project's machines, so this module predicts instead of measuring.
Two figures bound a decode step on a phone:

* bandwidth: bytes one token must read (ternary weights at their bits per weight, scales included;
  the output head; one embedding row; the K/V cache so far) divided by the phone's published sustained
  read bandwidth times an efficiency factor;
* compute: weights times the cycles per weight of the kernel's inner loop (from `llvm-mca`, LLVM's
  static scheduling models, on the compiled loop), divided by frequency times cores used times a
  parallel efficiency.

The larger of the two is the modelled time per token; the table says which one binds. Prefill (many
tokens) re-reads each weight once per token block, so it is modelled compute-bound from the GEMM
loops' cycles per weight-token.

Every input lives in `phone_model_data.json` beside this file, with its provenance: the external
kernels' llvm-mca figures (XNNPACK's `qd8-f32-qc4w` microkernels, llama.cpp's
`ggml_vec_dot_tq2_0_q8_K`, ONNX Runtime's W2 NEON kernel) were computed once from their sources or
binaries and are stored (CI cannot fetch them; none of their code is in this repository); the phones'
bandwidth figures carry their citations; the assumptions (cores used, clocks, efficiency factors,
context length) are stated in the data and printed under the table.

Our own ARM loops are analysed by `analyse_kernel`: it compiles a C/C++ file for aarch64 (clang with
`--target`, or `aarch64-linux-gnu-g++`), takes the innermost loop of a named function from the
assembly (or the region between `LLVM-MCA-BEGIN`/`LLVM-MCA-END` comments, if the source marks one),
runs `llvm-mca` on it per core and divides by the weights one iteration consumes. Until the real ARM
kernel exists, the figures come from a stand-in loop written here (`STANDIN_SOURCE`) and are labelled
as such; `refresh_our_kernels` recomputes them when the tools exist and otherwise the stored figures
are used (and labelled stored).

    python -m bitexport.bench.phone_model                       # the table (Markdown) on stored figures
    python -m bitexport.bench.phone_model --recompute           # recompute our loops first (needs tools)
    python -m bitexport.bench.phone_model --kernel-source runtime_ops/csrc/tq2_kernel_arm.cpp \\
        --kernel-function <name> --kernel-march armv8.2-a+dotprod \\
        --as tq2_gemv [--save]          # analyse the real kernel, use it for decode (and store it)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bitexport.model.config import ModelConfig

DATA_PATH = Path(__file__).with_name("phone_model_data.json")
LABEL = "MODEL, not measurement"

# --------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------

# Newest first: LLVM 14 (Debian 12's default) has no scheduling model for Cortex-A76/X-series cores
# (they all fall back to the Cortex-A57 model); LLVM 17+ has Neoverse-N1 (A76-derived), Neoverse-N2
# (A710-derived) and Neoverse-V2 (X3-derived) models.
LLVM_MCA_NAMES = ("llvm-mca-19", "llvm-mca-18", "llvm-mca-17", "llvm-mca", "llvm-mca-14")
CLANG_NAMES = ("clang++-19", "clang++-18", "clang++-17", "clang++", "clang++-14")
GCC_CROSS = "aarch64-linux-gnu-g++"


def find_llvm_mca(preferred: str | None = None) -> str | None:
    names = (preferred,) if preferred else LLVM_MCA_NAMES
    for name in names:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def llvm_mca_version(llvm_mca: str) -> str:
    out = subprocess.run([llvm_mca, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"LLVM version ([0-9.]+)", out)
    return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"


def find_compiler(preferred: str | None = None) -> tuple[str, str] | None:
    """(path, kind) of an aarch64-capable C++ compiler: kind is 'clang' (used with --target) or 'gcc'."""
    if preferred:
        path = shutil.which(preferred)
        if path is None:
            return None
        return path, ("clang" if "clang" in Path(preferred).name else "gcc")
    for name in CLANG_NAMES:
        path = shutil.which(name)
        if path:
            return path, "clang"
    path = shutil.which(GCC_CROSS)
    return (path, "gcc") if path else None


def compile_to_asm(source: str | Path, march: str, compiler: tuple[str, str] | None = None, opt: str = "-O3",
                   includes: tuple[str | Path, ...] = (), extra: tuple[str, ...] = (), language: str = "c++") -> str:
    """aarch64 assembly text of `source` (a path, or C/C++ source text when it contains a newline)."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise FileNotFoundError("no aarch64 compiler (clang++ or aarch64-linux-gnu-g++) on PATH")
    path, kind = compiler
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, str) and "\n" in source:
            src = Path(tmp) / ("kernel.cpp" if language == "c++" else "kernel.c")
            src.write_text(source)
        else:
            src = Path(source)
        out = Path(tmp) / "kernel.s"
        cmd = [path]
        if kind == "clang":
            cmd += ["--target=aarch64-linux-gnu"]
        cmd += [opt, f"-march={march}", "-S", "-fno-asynchronous-unwind-tables", "-o", str(out)]
        cmd += [f"-I{i}" for i in includes] + list(extra)
        if language == "c" and kind == "clang":
            cmd += ["-x", "c"]
        cmd += [str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return out.read_text()


def compiler_version(compiler: tuple[str, str]) -> str:
    out = subprocess.run([compiler[0], "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


# --------------------------------------------------------------------------------------------------
# Assembly: one function, its innermost loop
# --------------------------------------------------------------------------------------------------

_LABEL = re.compile(r"^([A-Za-z_.$][\w.$]*):")
_BRANCH = re.compile(r"^\s*(b\.[a-z]+|b(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)|b|cbnz|cbz|tbnz|tbz)\s+(?:[^,]+,\s*)*?([A-Za-z_.$][\w.$]*)\s*$")
_MCA_BEGIN = re.compile(r"(?://|#|;)\s*LLVM-MCA-BEGIN")
_MCA_END = re.compile(r"(?://|#|;)\s*LLVM-MCA-END")


def _symbol_matches(label: str, function: str) -> bool:
    """A label names `function`: the C symbol itself, or an Itanium-mangled C++ name whose last
    identifier (before the parameter types) is `function` (e.g. _ZN9bitexport3tq26detail10groups_armE...)."""
    if label == function:
        return True
    if not label.startswith("_Z"):
        return False
    # the nested name: _Z [N] ([L] <length><identifier>)+ E <parameter types>
    i = 2
    if label[i:i + 1] == "N":
        i += 1
    names = []
    while i < len(label):
        if label[i] == "L":
            i += 1
            continue
        m = re.match(r"\d+", label[i:])
        if not m:
            break
        n = int(m.group(0))
        start = i + len(m.group(0))
        names.append(label[start:start + n])
        i = start + n
    return bool(names) and names[-1] == function


def function_asm(asm: str, function: str) -> list[str]:
    """The lines of `function`'s body in compiler assembly output (from its label to .size/.cfi_endproc)."""
    lines = asm.splitlines()
    start = None
    for i, line in enumerate(lines):
        m = _LABEL.match(line)
        if m and _symbol_matches(m.group(1), function):
            start = i
            break
    if start is None:
        names = [m.group(1) for m in map(_LABEL.match, lines) if m and not m.group(1).startswith(".")]
        raise KeyError(f"function {function!r} not in the assembly (functions: {', '.join(names[:20])})")
    body = []
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped.startswith(".size") or stripped.startswith(".cfi_endproc"):
            break
        m = _LABEL.match(line)
        if m and not m.group(1).startswith(".") and body:  # the next global function
            break
        body.append(line)
    return body


def _is_instruction(line: str) -> bool:
    s = line.split("//")[0].strip()
    return bool(s) and not s.startswith(".") and not s.startswith("#") and not _LABEL.match(s)


def _clean(line: str) -> str:
    return re.sub(r"\s+", " ", line.split("//")[0].strip())


@dataclass
class Loop:
    label: str
    instructions: list[str]  # the loop body, one instruction a line, the back branch included
    source: str  # "markers", "innermost-loop"


def innermost_loop(body: list[str], which: str = "largest", region: str | None = None) -> Loop:
    """The loop llvm-mca should analyse, from one function's assembly lines.

    If the body has an `LLVM-MCA-BEGIN` ... `LLVM-MCA-END` region (an `asm volatile("// LLVM-MCA-BEGIN")`
    in the source; `region` picks a named one), the innermost loop that contains it (compilers move
    instructions across the markers, so they choose the loop, not its bounds), or the region itself
    when it is in no loop. Otherwise every backward branch to a label of this function
    defines a loop from the label to the branch; the innermost ones (containing no other loop) are
    candidates, and `which` picks one: "largest" (most instructions: the unrolled main loop rather
    than a remainder loop) or "dot" (most SDOT/UDOT/MMLA instructions, ties to the largest).
    """
    begin = next((i for i, l in enumerate(body) if _MCA_BEGIN.search(l)
                  and (region is None or l.split("LLVM-MCA-BEGIN", 1)[1].split() == [region])), None)
    if region is not None and begin is None:
        raise ValueError(f"no LLVM-MCA-BEGIN {region} marker in the function")
    marked = None
    if begin is not None:
        end = next((i for i, l in enumerate(body) if i > begin and _MCA_END.search(l)), None)
        if end is None:
            raise ValueError("LLVM-MCA-BEGIN without LLVM-MCA-END")
        marked = (begin, end)
    labels = {}
    for i, line in enumerate(body):
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = i
    loops = []
    for i, line in enumerate(body):
        if not _is_instruction(line):
            continue
        m = _BRANCH.match(_clean(line))
        if m and m.group(2) in labels and labels[m.group(2)] < i:
            loops.append((labels[m.group(2)], i, m.group(2)))
    inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    if marked is not None:
        # the compiler moves instructions across the (volatile asm) markers, so the markers only say
        # which loop: the whole innermost loop around them is analysed; a region in no loop, as is
        for s, e, label in inner:
            if s <= marked[0] <= e:
                return Loop(label, [_clean(l) for l in body[s:e + 1] if _is_instruction(l)], "markers")
        return Loop("markers", [_clean(l) for l in body[marked[0] + 1:marked[1]] if _is_instruction(l)], "markers")
    if not loops:
        raise ValueError("no loop (backward branch) in the function")
    cands = []
    for s, e, label in inner:
        ins = [_clean(l) for l in body[s:e + 1] if _is_instruction(l)]
        cands.append(Loop(label, ins, "innermost-loop"))

    def key(lp: Loop):
        dots = sum(dot_macs(i) > 0 for i in lp.instructions)
        return (dots, len(lp.instructions)) if which == "dot" else (len(lp.instructions), dots)

    return max(cands, key=key)


# multiply-accumulates one instruction does (128-bit forms): SDOT/UDOT/USDOT (by vector or by
# element) 16; SMMLA/UMMLA/USMMLA 32 (a 2x8 by 8x2 tile).
def dot_macs(instruction: str) -> int:
    op = instruction.split()[0] if instruction.split() else ""
    if op in ("sdot", "udot", "usdot", "sudot"):
        return 16 if ".16b" in instruction or ".4b" in instruction else 8
    if op in ("smmla", "ummla", "usmmla"):
        return 32
    return 0


def loop_macs(instructions: list[str]) -> int:
    return sum(dot_macs(i) for i in instructions)


# --------------------------------------------------------------------------------------------------
# llvm-mca
# --------------------------------------------------------------------------------------------------

@dataclass
class McaResult:
    mcpu: str
    iterations: int
    instructions: int
    total_cycles: int
    block_rthroughput: float
    ipc: float
    llvm_mca_version: str
    resources: list[str] = field(default_factory=list)

    @property
    def cycles_per_iteration(self) -> float:
        return self.total_cycles / self.iterations


def parse_llvm_mca(text: str) -> dict:
    """The summary figures of llvm-mca's default report."""
    def num(pattern: str, cast=float):
        m = re.search(pattern, text)
        if m is None:
            raise ValueError(f"llvm-mca output lacks {pattern!r}")
        return cast(m.group(1))

    resources = []
    m = re.search(r"Resources:\n((?:\[[^\n]*\n)+)", text)
    if m:
        resources = [r.split("-", 1)[1].strip() for r in m.group(1).strip().splitlines() if "-" in r]
    return {
        "iterations": num(r"Iterations:\s+(\d+)", int),
        "instructions": num(r"Instructions:\s+(\d+)", int),
        "total_cycles": num(r"Total Cycles:\s+(\d+)", int),
        "ipc": num(r"IPC:\s+([0-9.]+)"),
        "block_rthroughput": num(r"Block RThroughput:\s+([0-9.]+)"),
        "resources": resources,
    }


def run_llvm_mca(instructions: list[str], mcpu: str, mattr: str = "+dotprod,+i8mm,+fullfp16",
                 iterations: int = 1000, llvm_mca: str | None = None) -> McaResult:
    """llvm-mca's steady-state figures for `instructions` repeated `iterations` times on `mcpu`."""
    tool = llvm_mca or find_llvm_mca()
    if tool is None:
        raise FileNotFoundError("llvm-mca is not on PATH")
    # branch targets must resolve: keep the loop's own label, re-targeted at the top of the block
    text = "mca_loop_top:\n" + "\n".join(_retarget(i) for i in instructions) + "\n"
    cmd = [tool, "-mtriple=aarch64", f"-mcpu={mcpu}", f"-mattr={mattr}", f"-iterations={iterations}"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    p = parse_llvm_mca(proc.stdout)
    return McaResult(mcpu, p["iterations"], p["instructions"], p["total_cycles"], p["block_rthroughput"],
                     p["ipc"], llvm_mca_version(tool), p["resources"])


def _retarget(instruction: str) -> str:
    m = _BRANCH.match(instruction)
    if m:
        return instruction[: instruction.rfind(m.group(2))] + "mca_loop_top"
    return instruction


# --------------------------------------------------------------------------------------------------
# Kernels: what a loop iteration does, and cycles per weight
# --------------------------------------------------------------------------------------------------

@dataclass
class KernelSpec:
    """One inner loop to analyse. `weights_per_iteration` None: SDOT/MMLA multiply-accumulates in the
    loop divided by `tokens_per_iteration` (right for loops where every weight meets every token in a
    dot instruction once; give it explicitly otherwise)."""
    name: str
    source: str | Path  # a path, or source text
    function: str
    march: str = "armv8.2-a+dotprod"
    tokens_per_iteration: int = 1
    weights_per_iteration: int | None = None
    includes: tuple[str | Path, ...] = ()
    extra: tuple[str, ...] = ()
    loop: str = "dot"  # innermost_loop(which=...)
    region: str | None = None  # a named LLVM-MCA-BEGIN region instead of the innermost loop
    language: str = "c++"
    description: str = ""


def analyse_kernel(spec: KernelSpec, mcpus: list[str], compiler: tuple[str, str] | None = None,
                   llvm_mca: str | None = None, asm: str | None = None) -> dict:
    """Compile `spec`, take its loop, run llvm-mca for each of `mcpus`: cycles per weight (per token)."""
    compiler = compiler or find_compiler()
    if asm is None:
        asm = compile_to_asm(spec.source, spec.march, compiler, includes=spec.includes, extra=spec.extra,
                             language=spec.language)
    loop = innermost_loop(function_asm(asm, spec.function), spec.loop, spec.region)
    return analyse_loop(spec, loop, mcpus, llvm_mca) | {
        "compiler": compiler_version(compiler) if compiler else None,
        "flags": f"-O3 -march={spec.march}",
    }


def analyse_loop(spec: KernelSpec, loop: Loop, mcpus: list[str], llvm_mca: str | None = None) -> dict:
    macs = loop_macs(loop.instructions)
    weights = spec.weights_per_iteration or (macs // spec.tokens_per_iteration if macs else None)
    if not weights:
        raise ValueError(f"{spec.name}: no dot-product instruction in the loop; give weights_per_iteration")
    per_cpu = {}
    version = None
    for mcpu in mcpus:
        r = run_llvm_mca(loop.instructions, mcpu, llvm_mca=llvm_mca)
        version = r.llvm_mca_version
        per_cpu[mcpu] = {
            "cycles_per_iteration": round(r.cycles_per_iteration, 3),
            "block_rthroughput": r.block_rthroughput,
            "cycles_per_weight": r.cycles_per_iteration / weights / spec.tokens_per_iteration,
            "scheduling_model_units": r.resources[:2],
        }
    return {
        "kernel": spec.name,
        "function": spec.function,
        "loop_source": loop.source,
        "loop_instructions": len(loop.instructions),
        "dot_macs_per_iteration": macs,
        "weights_per_iteration": weights,
        "tokens_per_iteration": spec.tokens_per_iteration,
        "llvm_mca_version": version,
        "per_cpu": per_cpu,
        "loop": loop.instructions,
    }


# --------------------------------------------------------------------------------------------------
# The stand-in loops: design alternatives and llama.cpp's F16 head (our real loops: REAL_KERNELS)
# --------------------------------------------------------------------------------------------------

# Each one does what a dotprod tq2 kernel must do on the layout of runtime_ops/csrc/tq2_layout.h:
# one 32-byte block holds 128 codes of one row, byte j bits 2q..2q+1 = weight 32q + j; 4 rows are
# interleaved block by block (a row group). Codes are 0..2 (w + 1); the kernels compute
# sum(x * code) and subtract sum(x) once a row (not in the loop).
STANDIN_SOURCE = r"""
#include <arm_neon.h>
#include <stdint.h>

#define TQ2_UNPACK(lo, hi)                                                          \
  const int8x16_t c0 = vreinterpretq_s8_u8(vandq_u8(lo, m3));                      \
  const int8x16_t c1 = vreinterpretq_s8_u8(vandq_u8(hi, m3));                      \
  const int8x16_t c2 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 2), m3));       \
  const int8x16_t c3 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 2), m3));       \
  const int8x16_t c4 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 4), m3));       \
  const int8x16_t c5 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 4), m3));       \
  const int8x16_t c6 = vreinterpretq_s8_u8(vshrq_n_u8(lo, 6));                     \
  const int8x16_t c7 = vreinterpretq_s8_u8(vshrq_n_u8(hi, 6));

/* Decode (GEMV), one token: a row group (4 rows) against K/128 blocks. Per block: 128 activation
   bytes loaded once for the 4 rows; per row 32 weight bytes, 3 shifts + 3 ands per 16 bytes
   (the top pair needs no and), 8 SDOTs into two accumulators. */
void standin_tq2_gemv_dotprod(const uint8_t* w, const int8_t* x, int64_t kb, int32_t* out) {
  const uint8x16_t m3 = vdupq_n_u8(3);
  int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  for (int64_t b = 0; b < kb; ++b) {
    const int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16), x2 = vld1q_s8(x + 32), x3 = vld1q_s8(x + 48);
    const int8x16_t x4 = vld1q_s8(x + 64), x5 = vld1q_s8(x + 80), x6 = vld1q_s8(x + 96), x7 = vld1q_s8(x + 112);
#define ROW(r, acc0, acc1)                                                          \
    {                                                                               \
      const uint8x16_t lo = vld1q_u8(w + 32 * r), hi = vld1q_u8(w + 32 * r + 16);   \
      TQ2_UNPACK(lo, hi)                                                            \
      acc0 = vdotq_s32(acc0, c0, x0); acc1 = vdotq_s32(acc1, c1, x1);               \
      acc0 = vdotq_s32(acc0, c2, x2); acc1 = vdotq_s32(acc1, c3, x3);               \
      acc0 = vdotq_s32(acc0, c4, x4); acc1 = vdotq_s32(acc1, c5, x5);               \
      acc0 = vdotq_s32(acc0, c6, x6); acc1 = vdotq_s32(acc1, c7, x7);               \
    }
    ROW(0, a00, a01) ROW(1, a10, a11) ROW(2, a20, a21) ROW(3, a30, a31)
#undef ROW
    w += 128;
    x += 128;
  }
  out[0] = vaddvq_s32(vaddq_s32(a00, a01));
  out[1] = vaddvq_s32(vaddq_s32(a10, a11));
  out[2] = vaddvq_s32(vaddq_s32(a20, a21));
  out[3] = vaddvq_s32(vaddq_s32(a30, a31));
}

/* Decode, the same work with one instruction per 16 codes instead of two: plane q of a byte is
   masked in place (and 0x03 / 0x0c / 0x30, ushr 6 for the top pair, whose mask would overflow a
   signed byte), so the SDOT sums 4^q * code * x into a per-plane accumulator; the planes are
   combined once a row after the loop (p0 + p1 / 4 + p2 / 16, exact in int32; planes 0 and 3 share p0). A design alternative, not a finding about the kernel. */
void standin_tq2_gemv_dotprod_masked(const uint8_t* w, const int8_t* x, int64_t kb, int32_t* out) {
  const uint8x16_t m0 = vdupq_n_u8(0x03), m1 = vdupq_n_u8(0x0c), m2 = vdupq_n_u8(0x30);
  /* planes 0 and 3 both carry weight 1, so they share an accumulator: 3 a row, 12 in all */
  int32x4_t p0[4], p1[4], p2[4];
  for (int r = 0; r < 4; ++r) p0[r] = p1[r] = p2[r] = vdupq_n_s32(0);
  for (int64_t b = 0; b < kb; ++b) {
    const int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16), x2 = vld1q_s8(x + 32), x3 = vld1q_s8(x + 48);
    const int8x16_t x4 = vld1q_s8(x + 64), x5 = vld1q_s8(x + 80), x6 = vld1q_s8(x + 96), x7 = vld1q_s8(x + 112);
    for (int r = 0; r < 4; ++r) {
      const uint8x16_t lo = vld1q_u8(w + 32 * r), hi = vld1q_u8(w + 32 * r + 16);
      p0[r] = vdotq_s32(p0[r], vreinterpretq_s8_u8(vandq_u8(lo, m0)), x0);
      p0[r] = vdotq_s32(p0[r], vreinterpretq_s8_u8(vandq_u8(hi, m0)), x1);
      p1[r] = vdotq_s32(p1[r], vreinterpretq_s8_u8(vandq_u8(lo, m1)), x2);
      p1[r] = vdotq_s32(p1[r], vreinterpretq_s8_u8(vandq_u8(hi, m1)), x3);
      p2[r] = vdotq_s32(p2[r], vreinterpretq_s8_u8(vandq_u8(lo, m2)), x4);
      p2[r] = vdotq_s32(p2[r], vreinterpretq_s8_u8(vandq_u8(hi, m2)), x5);
      p0[r] = vdotq_s32(p0[r], vreinterpretq_s8_u8(vshrq_n_u8(lo, 6)), x6);
      p0[r] = vdotq_s32(p0[r], vreinterpretq_s8_u8(vshrq_n_u8(hi, 6)), x7);
    }
    w += 128;
    x += 128;
  }
  for (int r = 0; r < 4; ++r)
    out[r] = vaddvq_s32(p0[r]) + vaddvq_s32(p1[r]) / 4 + vaddvq_s32(p2[r]) / 16;
}

/* Prefill (GEMM), 4 tokens: one row's block is unpacked once and used for 4 tokens (activations
   of token t at x + t * ldx). Per block: 32 weight bytes, the same 14 unpack instructions, then per
   token 8 activation loads and 8 SDOTs. */
void standin_tq2_gemm4_dotprod(const uint8_t* w, const int8_t* x, int64_t ldx, int64_t kb, int32_t* out) {
  const uint8x16_t m3 = vdupq_n_u8(3);
  int32x4_t t0a = vdupq_n_s32(0), t0b = t0a, t1a = t0a, t1b = t0a, t2a = t0a, t2b = t0a, t3a = t0a, t3b = t0a;
  for (int64_t b = 0; b < kb; ++b) {
    const uint8x16_t lo = vld1q_u8(w), hi = vld1q_u8(w + 16);
    TQ2_UNPACK(lo, hi)
#define TOK(t, acc0, acc1)                                                          \
    {                                                                               \
      const int8_t* xt = x + (t) * ldx;                                             \
      acc0 = vdotq_s32(acc0, c0, vld1q_s8(xt));      acc1 = vdotq_s32(acc1, c1, vld1q_s8(xt + 16)); \
      acc0 = vdotq_s32(acc0, c2, vld1q_s8(xt + 32)); acc1 = vdotq_s32(acc1, c3, vld1q_s8(xt + 48)); \
      acc0 = vdotq_s32(acc0, c4, vld1q_s8(xt + 64)); acc1 = vdotq_s32(acc1, c5, vld1q_s8(xt + 80)); \
      acc0 = vdotq_s32(acc0, c6, vld1q_s8(xt + 96)); acc1 = vdotq_s32(acc1, c7, vld1q_s8(xt + 112)); \
    }
    TOK(0, t0a, t0b) TOK(1, t1a, t1b) TOK(2, t2a, t2b) TOK(3, t3a, t3b)
#undef TOK
    w += 128;  /* the next block of this row: 4 rows are interleaved */
    x += 128;
  }
  out[0] = vaddvq_s32(vaddq_s32(t0a, t0b));
  out[1] = vaddvq_s32(vaddq_s32(t1a, t1b));
  out[2] = vaddvq_s32(vaddq_s32(t2a, t2b));
  out[3] = vaddvq_s32(vaddq_s32(t3a, t3b));
}

/* Stand-in for llama.cpp's ggml_vec_dot_f16 on an F16 head (GGML_F16_VEC_FMA = vfmaq_f16,
   4 accumulators of 8 lanes, 32 weights an iteration). Ours, written from its description. */
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
void standin_f16_dot(const __fp16* a, const __fp16* b, int64_t n, __fp16* out) {
  float16x8_t s0 = vdupq_n_f16(0), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t i = 0; i < n; i += 32) {
    s0 = vfmaq_f16(s0, vld1q_f16(a + i), vld1q_f16(b + i));
    s1 = vfmaq_f16(s1, vld1q_f16(a + i + 8), vld1q_f16(b + i + 8));
    s2 = vfmaq_f16(s2, vld1q_f16(a + i + 16), vld1q_f16(b + i + 16));
    s3 = vfmaq_f16(s3, vld1q_f16(a + i + 24), vld1q_f16(b + i + 24));
  }
  vst1q_f16(out, vaddq_f16(vaddq_f16(s0, s1), vaddq_f16(s2, s3)));
}
#endif
"""

STANDIN_KERNELS = {
    "tq2_gemv": KernelSpec(
        "tq2_gemv", STANDIN_SOURCE, "standin_tq2_gemv_dotprod", "armv8.2-a+dotprod+fp16",
        tokens_per_iteration=1, weights_per_iteration=512, language="c",
        description="stand-in tq2 GEMV (decode): one row group (4 rows x 128 weights) an iteration"),
    "tq2_gemv_masked": KernelSpec(
        "tq2_gemv_masked", STANDIN_SOURCE, "standin_tq2_gemv_dotprod_masked", "armv8.2-a+dotprod+fp16",
        tokens_per_iteration=1, weights_per_iteration=512, language="c",
        description="stand-in tq2 GEMV, planes masked in place (1 op + 1 SDOT per 16 codes): a design alternative"),
    "tq2_gemm": KernelSpec(
        "tq2_gemm", STANDIN_SOURCE, "standin_tq2_gemm4_dotprod", "armv8.2-a+dotprod+fp16",
        tokens_per_iteration=4, weights_per_iteration=128, language="c",
        description="stand-in tq2 GEMM (prefill): one row's block (128 weights) for 4 tokens an iteration"),
    "f16_dot": KernelSpec(
        "f16_dot", STANDIN_SOURCE, "standin_f16_dot", "armv8.2-a+dotprod+fp16",
        tokens_per_iteration=1, weights_per_iteration=32, language="c", loop="largest",
        description="stand-in for llama.cpp's ggml_vec_dot_f16 (F16 head), 32 weights an iteration"),
}


# Our real ARM loops (runtime_ops/csrc/tq2_kernel_arm.cpp): figure name -> (function, -march, tokens
# an iteration). Decode is the sdot GEMV on every dotprod core (i8mm cores too: one token wastes half
# of an smmla); prefill is the sdot tile of 8 tokens, or the smmla tile of 4 token pairs on i8mm cores.
REAL_KERNELS = {
    "tq2_gemv": ("dot_gemv", "armv8.2-a+dotprod", 1),
    "tq2_gemm": ("dot_tile", "armv8.2-a+dotprod", 8),
    "tq2_gemm_i8mm": ("mmla_tile", "armv8.6-a+i8mm", 8),
}


def arm_kernel_source() -> Path:
    """tq2_kernel_arm.cpp as installed with bitexport.runtime_ops (package data), located, not imported."""
    import importlib.util

    spec = importlib.util.find_spec("bitexport.runtime_ops")
    return Path(list(spec.submodule_search_locations)[0]) / "csrc" / "tq2_kernel_arm.cpp"


def executorch_compile_args() -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """Include directories and defines for sources that include ExecuTorch's headers (as
    runtime_ops/csrc/tq2_kernel.cpp does), from the installed executorch wheel; empty without it.
    The package is located, not imported."""
    import importlib.util

    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        return (), ()
    inc = Path(list(spec.submodule_search_locations)[0]) / "include"
    if not inc.is_dir():
        return (), ()
    return (inc, inc / "executorch" / "runtime" / "core" / "portable_type" / "c10"), \
        ("-DC10_USING_CUSTOM_GENERATED_MACROS",)


def real_kernel_spec(source: str | Path, function: str, march: str = "armv8.2-a+dotprod", tokens: int = 1,
                     weights_per_iteration: int | None = None, repo_root: Path | None = None,
                     region: str | None = None, includes: tuple[str | Path, ...] = ()) -> KernelSpec:
    """The spec for the real ARM kernel once it lands (runtime_ops/csrc/tq2_kernel_arm.cpp): its
    directory is on the include path (tq2_kernel.h, tq2_layout.h), so are ExecuTorch's headers when the
    executorch wheel is installed, and BITEXPORT_MCA is defined, so
    the source may mark the loop to analyse, only in this build:

        #ifdef BITEXPORT_MCA
        #define TQ2_MCA_BEGIN(name) asm volatile("// LLVM-MCA-BEGIN " name)
        #define TQ2_MCA_END() asm volatile("// LLVM-MCA-END")
        #else
        #define TQ2_MCA_BEGIN(name)
        #define TQ2_MCA_END()
        #endif

    Without markers the innermost loop with the most dot-product instructions is taken."""
    src = Path(source)
    if repo_root is not None and not src.is_absolute():
        src = repo_root / src
    et_includes, et_defines = executorch_compile_args()
    return KernelSpec(f"tq2 {function}", src, function, march, tokens_per_iteration=tokens,
                      weights_per_iteration=weights_per_iteration, includes=(src.parent, *includes, *et_includes),
                      extra=("-DBITEXPORT_MCA", *et_defines), region=region)


# --------------------------------------------------------------------------------------------------
# The data file
# --------------------------------------------------------------------------------------------------

def load_data(path: Path = DATA_PATH) -> dict:
    return json.loads(Path(path).read_text())


def _figures(result: dict) -> dict:
    """What the data file keeps of one llvm-mca analysis."""
    return {
        "flags": result["flags"], "compiler": result["compiler"], "llvm_mca_version": result["llvm_mca_version"],
        "weights_per_iteration": result["weights_per_iteration"],
        "tokens_per_iteration": result["tokens_per_iteration"],
        "cycles_per_iteration": {c: v["cycles_per_iteration"] for c, v in result["per_cpu"].items()},
        "loop": result["loop"], "figures_from": "recomputed",
    }


def refresh_our_kernels(data: dict | None = None, specs: dict[str, KernelSpec] | None = None,
                        llvm_mca: str | None = None) -> dict:
    """Recompute our loops' cycles per weight (in place in `data['our_kernels']`) when llvm-mca and an
    aarch64 compiler exist; otherwise keep the stored figures and mark them stored."""
    data = data if data is not None else load_data()
    specs = specs if specs is not None else STANDIN_KERNELS
    tool = find_llvm_mca(llvm_mca)
    compiler = find_compiler()
    mcpus = sorted({c["mca_cpu"] for c in data["cores"].values()})
    for name, spec in specs.items():
        entry = data["our_kernels"].setdefault(name, {})
        if tool is None or compiler is None:
            entry["figures_from"] = "stored (llvm-mca or an aarch64 compiler missing here)"
            continue
        if specs is STANDIN_KERNELS and entry.get("stand_in") is False:
            continue  # the real kernel's figures: recomputed from its source below
        result = analyse_kernel(spec, mcpus, compiler, tool)
        entry.update({"description": spec.description, "function": spec.function,
                      "stand_in": specs is STANDIN_KERNELS, **_figures(result)})
    if specs is STANDIN_KERNELS and tool is not None and compiler is not None and arm_kernel_source().is_file():
        for name, (function, march, tokens) in REAL_KERNELS.items():
            result = analyse_kernel(real_kernel_spec(arm_kernel_source(), function, march, tokens), mcpus,
                                    compiler, tool)
            data["our_kernels"].setdefault(name, {}).update({
                "label": f"tq2 {function} (runtime_ops/csrc/tq2_kernel_arm.cpp)", "function": function,
                "source": "runtime_ops/csrc/tq2_kernel_arm.cpp", "stand_in": False, **_figures(result)})
    return data


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape(ModelConfig):
    """A modelled shape: bitexport's own ModelConfig, with a name for the table."""

    name: str = ""

    @property
    def linears(self) -> list[tuple[int, int]]:
        """(out_features N, in_features K) of one layer's ternary linears."""
        return list(self.linear_shapes().values())

    @property
    def ternary_weights(self) -> int:
        return self.num_layers * sum(n * k for n, k in self.linears)

    @property
    def head_weights(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def kv_values_per_position(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def shapes(data: dict | None = None) -> dict[str, Shape]:
    data = data or load_data()
    return {k: Shape(name=k, **{f: v for f, v in s.items() if not f.startswith("_")}) for k, s in data["shapes"].items()}


def ternary_bytes(shape: Shape, fmt: dict) -> float:
    """Bytes of all ternary linears in a path's weight format (scales and padding included)."""
    kind = fmt["kind"]
    total = 0.0
    for n, k in shape.linears:
        if kind == "tq2":  # runtime_ops/csrc/tq2_layout.h: 4-row groups, 128-weight blocks, fp32 scale a row
            total += math.ceil(n / 4) * 4 * math.ceil(k / 128) * 32 + 4 * n
        elif kind == "blocked":  # fixed block of `block` weights, `block_bytes` bytes (codes + scale)
            total += n * math.ceil(k / fmt["block"]) * fmt["block_bytes"]
        elif kind == "per_row":  # bits a weight + bytes a row (scale, sums)
            total += n * (k * fmt["bits"] / 8 + fmt["row_bytes"])
        else:
            raise ValueError(f"unknown weight format kind {kind!r}")
    return total * shape.num_layers


def bytes_per_token(shape: Shape, path: dict, context: float) -> dict[str, float]:
    """Bytes one decode step reads at `context` positions: ternary weights, head, one embedding row,
    K/V cache (norms are negligible and left out)."""
    ternary = ternary_bytes(shape, path["weights"])
    head = shape.head_weights * path["head_bits"] / 8
    emb = shape.hidden_size * path["embedding_bits"] / 8
    kv = shape.kv_values_per_position * context * path["kv_bytes"]
    return {"ternary": ternary, "head": head, "embedding_row": emb, "kv_cache": kv,
            "total": ternary + head + emb + kv}


def cycles_per_weight(data: dict, kernel: str, mca_cpu: str) -> float:
    """Cycles per weight per token of a kernel on a scheduling model (stored or recomputed figures)."""
    k = data["our_kernels"].get(kernel) or data["external_kernels"][kernel]
    cyc = k["cycles_per_iteration"][mca_cpu]
    return cyc / k["weights_per_iteration"] / k.get("tokens_per_iteration", 1)


def weights_per_second(data: dict, phone: dict, kernel_for_core) -> float:
    """Aggregate weights/s of the cores used: sum over core types of count x GHz / cycles-per-weight,
    times the parallel efficiency. `kernel_for_core(core_key)` names the kernel that core runs."""
    a = data["assumptions"]
    total = 0.0
    for use in phone["cores_used"]:
        core = data["cores"][use["core"]]
        cpw = cycles_per_weight(data, kernel_for_core(use["core"]), core["mca_cpu"])
        total += use["count"] * use["ghz"] * 1e9 / cpw
    return total * a["parallel_efficiency"]


def _kernel_for(path: dict, role: str, data: dict):
    """role 'decode' / 'prefill' / 'head': a function of the core key giving the kernel name; a path
    may name one kernel, or a dict by core feature ('i8mm' / 'dotprod')."""
    spec = path["kernels"][role]

    def pick(core_key: str) -> str:
        if isinstance(spec, str):
            return spec
        core = data["cores"][core_key]
        return spec["i8mm"] if core.get("i8mm") and "i8mm" in spec else spec["dotprod"]

    return pick


def predict(data: dict | None = None) -> list[dict]:
    """One row per (model shape, phone, path): modelled decode and prefill tokens/s, what binds."""
    data = data or load_data()
    a = data["assumptions"]
    rows = []
    for shape in shapes(data).values():
        for phone_key, phone in data["phones"].items():
            bw = phone["bandwidth"]["gb_per_s"] * 1e9 * a["bandwidth_efficiency"]
            for path_key, path in data["paths"].items():
                b = bytes_per_token(shape, path, a["decode_context_tokens"])
                t_bw = b["total"] / bw
                lin = weights_per_second(data, phone, _kernel_for(path, "decode", data))
                head = weights_per_second(data, phone, _kernel_for(path, "head", data))
                t_compute = shape.ternary_weights / lin + shape.head_weights / head
                t = max(t_bw, t_compute)
                cached = b["total"] < a.get("cache_resident_below_mb", 0) * 1e6
                pre_lin = weights_per_second(data, phone, _kernel_for(path, "prefill", data))
                # prefill: every ternary weight meets every prompt token; the head runs once (last token)
                pre_t = shape.ternary_weights / pre_lin
                rows.append({
                    "shape": shape.name, "phone": phone_key, "phone_name": phone["name"], "path": path_key,
                    "path_name": path["name"], "bytes_per_token": b["total"], "bytes": b,
                    "bandwidth_gb_per_s": phone["bandwidth"]["gb_per_s"],
                    "t_bandwidth_ms": t_bw * 1e3, "t_compute_ms": t_compute * 1e3,
                    "decode_tokens_per_s": 1.0 / t, "binds": "bandwidth" if t_bw >= t_compute else "compute",
                    "cache_resident": cached,
                    "prefill_tokens_per_s": 1.0 / pre_t,
                    "figures": "stored" if any(data["our_kernels"].get(k, {}).get("figures_from", "stored")
                                               .startswith("stored") for k in data["our_kernels"]) else "recomputed",
                })
    _ratios(rows)
    return rows


def _ratios(rows: list[dict]) -> None:
    by = {(r["shape"], r["phone"], r["path"]): r for r in rows}
    for r in rows:
        for other, key in (("int4", "decode_vs_int4"), ("tq2_0", "decode_vs_tq2_0")):
            o = by.get((r["shape"], r["phone"], other))
            r[key] = r["decode_tokens_per_s"] / o["decode_tokens_per_s"] if o else None
        o = by.get((r["shape"], r["phone"], "int4"))
        r["prefill_vs_int4"] = r["prefill_tokens_per_s"] / o["prefill_tokens_per_s"] if o else None


def per_core(data: dict | None = None, shape: str = "2b") -> list[dict]:
    """One core of each type, compute only (no bandwidth limit): cycles per weight of each path's
    decode and prefill loops and the ratios the issue's targets are about. Where compute binds
    (one core, little cores, a cache-resident model) these ratios are the decode ratios."""
    data = data or load_data()
    sh = shapes(data)[shape]
    out = []
    for key, core in data["cores"].items():
        cpu = core["mca_cpu"]
        row = {"core": key, "core_name": core["name"], "mca_cpu": cpu, "i8mm": core.get("i8mm", False)}
        for path_key, path in data["paths"].items():
            for role in ("decode", "prefill", "head"):
                row[f"{path_key}_{role}_kernel"] = _kernel_for(path, role, data)(key)
                row[f"{path_key}_{role}_cpw"] = cycles_per_weight(data, row[f"{path_key}_{role}_kernel"], cpu)
            # single-core compute-bound decode time at 1 GHz (ratios do not depend on the clock)
            row[f"{path_key}_decode_cycles_per_token"] = (sh.ternary_weights * row[f"{path_key}_decode_cpw"]
                                                          + sh.head_weights * row[f"{path_key}_head_cpw"])
        if "tq2_gemv_masked" in data["our_kernels"]:
            row["tq2_masked_decode_cpw"] = cycles_per_weight(data, "tq2_gemv_masked", cpu)
            row["tq2_masked_decode_cycles_per_token"] = (sh.ternary_weights * row["tq2_masked_decode_cpw"]
                                                         + sh.head_weights * row["tq2_head_cpw"])
        c = lambda p: row[f"{p}_decode_cycles_per_token"]
        row["compute_decode_tq2_vs_int4"] = c("int4") / c("tq2")
        row["compute_decode_tq2_vs_tq2_0"] = c("tq2_0") / c("tq2")
        if "tq2_masked_decode_cycles_per_token" in row:
            row["compute_decode_tq2_masked_vs_int4"] = c("int4") / row["tq2_masked_decode_cycles_per_token"]
        row["prefill_tq2_vs_int4"] = row["int4_prefill_cpw"] / row["tq2_prefill_cpw"]
        out.append(row)
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Issue 13's targets per (shape, phone): tq2 decode >= 1.5x int4 and >= 1.2x TQ2_0, prefill >= int4."""
    out = []
    for r in rows:
        if r["path"] != "tq2":
            continue
        out.append({"shape": r["shape"], "phone": r["phone"],
                    "decode_vs_int4": r["decode_vs_int4"], "decode_1.5x_int4": r["decode_vs_int4"] >= 1.5,
                    "decode_vs_tq2_0": r["decode_vs_tq2_0"], "decode_1.2x_tq2_0": r["decode_vs_tq2_0"] >= 1.2,
                    "prefill_vs_int4": r["prefill_vs_int4"], "prefill_ge_int4": r["prefill_vs_int4"] >= 1.0})
    return out


def markdown(rows: list[dict] | None = None, data: dict | None = None, shape_filter: tuple[str, ...] | None = None) -> str:
    data = data or load_data()
    rows = rows if rows is not None else predict(data)
    if shape_filter:
        rows = [r for r in rows if r["shape"] in shape_filter]
    a = data["assumptions"]
    used = {k for p in data["paths"].values() for spec in p["kernels"].values()
            for k in ([spec] if isinstance(spec, str) else spec.values())}
    standins = sorted(k for k in used if k.startswith("tq2") and data["our_kernels"].get(k, {}).get("stand_in"))
    note = (f"Our tq2 loops are **stand-ins** ({', '.join(standins)}) until the ARM kernel lands "
            f"(figures: {rows[0]['figures'] if rows else 'n/a'})." if standins else
            f"Our tq2 figures: the ARM kernel's loops (runtime_ops/csrc/tq2_kernel_arm.cpp), "
            f"{rows[0]['figures'] if rows else 'n/a'}.")
    mixed = sorted({k.get("llvm_mca_version") for k in data["our_kernels"].values()
                    if k.get("llvm_mca_version") and k.get("llvm_mca_version") != data["llvm_mca"]["version"]})
    if mixed:
        note += (f" Our loops were recomputed with llvm-mca {', '.join(mixed)}, the external kernels' figures "
                 f"with {data['llvm_mca']['version']}: compare across the two with care.")
    if "f16_dot" in used:
        note += " llama.cpp's F16 head is costed with a stand-in of ggml_vec_dot_f16."
    out = [f"### Phone performance: {LABEL}", "",
           "Predicted from llvm-mca cycle counts and published bandwidth; no phone was run. " + note, "",
           "| model | phone | path | MB / token | decode tok/s | binds | vs int4 | vs TQ2_0 | prefill tok/s | prefill vs int4 |",
           "|---|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = lambda x: f"{x:.2f}x" if x is not None else "-"
        binds = r["binds"] + (" (cache-resident: DRAM roofline n/a)" if r.get("cache_resident") else "")
        out.append(f"| {r['shape']} | {r['phone_name']} | {r['path_name']} | {r['bytes_per_token'] / 1e6:.1f} "
                   f"| {r['decode_tokens_per_s']:.1f} | {binds} | {ratio(r['decode_vs_int4'])} "
                   f"| {ratio(r['decode_vs_tq2_0'])} | {r['prefill_tokens_per_s']:.0f} | {ratio(r['prefill_vs_int4'])} |")
    out += ["", "Assumptions (" + LABEL + "):", ""]
    out += [f"- {line}" for line in a["statements"]]
    out += ["", "Phones (cores used; sustained read bandwidth):", ""]
    for p in data["phones"].values():
        cores = " + ".join(f"{u['count']}x {data['cores'][u['core']]['name']} @ {u['ghz']} GHz" for u in p["cores_used"])
        out.append(f"- {p['name']} ({p['soc']}): {cores}; {p['bandwidth']['gb_per_s']} GB/s "
                   f"({p['bandwidth']['what']}; {p['bandwidth']['source']})")
    out += ["", "One core, compute only (2B shape; the ratios where compute binds):", "",
            "| core (llvm-mca model) | tq2 decode vs int4 | tq2 (masked stand-in) vs int4 | tq2 decode vs TQ2_0 | tq2 prefill vs int4 |",
            "|---|---:|---:|---:|---:|"]
    for c in per_core(data):
        out.append(f"| {c['core_name']} ({c['mca_cpu']}) | {c['compute_decode_tq2_vs_int4']:.2f}x "
                   f"| {c.get('compute_decode_tq2_masked_vs_int4', float('nan')):.2f}x "
                   f"| {c['compute_decode_tq2_vs_tq2_0']:.2f}x | {c['prefill_tq2_vs_int4']:.2f}x |")
    out += ["", "Cycles per weight (llvm-mca " + data["llvm_mca"]["version"] + "; scheduling model per core):", ""]
    cores = list(data["cores"].values())
    out.append("| kernel | " + " | ".join(f"{c['name']} ({c['mca_cpu']})" for c in cores) + " |")
    out.append("|---|" + "---:|" * len(cores))
    for group in ("our_kernels", "external_kernels"):
        for key, k in data[group].items():
            cells = [f"{cycles_per_weight(data, key, c['mca_cpu']):.4f}" if c["mca_cpu"] in k["cycles_per_iteration"]
                     else "-" for c in cores]
            out.append(f"| {k.get('label', key)} | " + " | ".join(cells) + " |")
    llvm14 = data["llvm_mca"].get("llvm14_cpus")
    if llvm14:
        out += ["", f"The same loops under LLVM {data['llvm_mca'].get('llvm14_version', '14')} (Debian 12's llvm-mca), "
                "whose models lack every Cortex-A7x/X core (reference only):", "",
                "| kernel | " + " | ".join(f"{c} ({m})" for c, m in llvm14.items()) + " |",
                "|---|" + "---:|" * len(llvm14)]
        for group in ("our_kernels", "external_kernels"):
            for key, k in data[group].items():
                c14 = k.get("llvm14_cycles_per_iteration")
                if not c14:
                    continue
                per = k["weights_per_iteration"] * k.get("tokens_per_iteration", 1)
                out.append(f"| {k.get('label', key)} | " + " | ".join(
                    f"{c14[c] / per:.4f}" if c in c14 else "-" for c in llvm14) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"Phone performance table ({LABEL})")
    ap.add_argument("--recompute", action="store_true", help="recompute our loops' llvm-mca figures first")
    ap.add_argument("--kernel-source", help="analyse this aarch64 C/C++ file (e.g. runtime_ops/csrc/tq2_kernel_arm.cpp)")
    ap.add_argument("--kernel-function", help="the function whose innermost loop to analyse")
    ap.add_argument("--kernel-march", default="armv8.2-a+dotprod")
    ap.add_argument("--kernel-tokens", type=int, default=1, help="tokens one loop iteration serves (GEMM)")
    ap.add_argument("--kernel-weights", type=int, help="weights one iteration consumes (default: from SDOT count)")
    ap.add_argument("--kernel-include", action="append", default=[],
                    help="another include directory (e.g. executorch's headers in site-packages/executorch/include)")
    ap.add_argument("--kernel-region", help="analyse the LLVM-MCA-BEGIN <name> region instead of the innermost loop")
    ap.add_argument("--as", dest="as_kernel", choices=("tq2_gemv", "tq2_gemm", "tq2_gemm_i8mm"),
                    help="replace the stand-in for decode (tq2_gemv) or prefill (tq2_gemm) with the analysed kernel")
    ap.add_argument("--save", action="store_true", help="write the figures into phone_model_data.json")
    ap.add_argument("--shape", action="append", help="only these shapes (demo, large, 2b); repeatable")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = load_data()
    if args.recompute:
        refresh_our_kernels(data)
    if args.kernel_source:
        if not args.kernel_function:
            ap.error("--kernel-source needs --kernel-function")
        spec = real_kernel_spec(args.kernel_source, args.kernel_function, args.kernel_march, args.kernel_tokens,
                                args.kernel_weights, region=args.kernel_region, includes=tuple(args.kernel_include))
        mcpus = sorted({c["mca_cpu"] for c in data["cores"].values()})
        result = analyse_kernel(spec, mcpus)
        print(json.dumps({k: v for k, v in result.items() if k != "loop"}, indent=2))
        if args.as_kernel:
            entry = data["our_kernels"].setdefault(args.as_kernel, {})
            entry.update({
                "label": f"tq2 {args.kernel_function} ({args.kernel_source})", "function": args.kernel_function,
                "source": str(args.kernel_source), "stand_in": False, **_figures(result)})
    if args.save:
        DATA_PATH.write_text(json.dumps(data, indent=1) + "\n")
    rows = predict(data)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows, data, tuple(args.shape) if args.shape else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
