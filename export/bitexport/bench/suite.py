"""`bitexport bench`: every variant side by side, measured in one run.

Steps, each printed as one line on stderr:
1. the model: MODEL, or the `--shape` with random ternary weights written as a checkpoint (and, for
   llama.cpp, as a 1bitLLM folder holding the same codes and scales);
2. export every variant, each in its own process (export time, export peak memory, file size);
   llama.cpp's variants through its own converter;
3. the machine's read bandwidth (the roofline of decoding);
4. R repetitions, variants alternating inside each, every measurement in its own process: prefill
   of a `--prompt-len` prompt, `--new-tokens` greedy tokens, peak resident memory;
5. medians and spread, agreement of greedy tokens with the PyTorch reference, share of the
   roofline, ratios against llama.cpp TQ2_0 and fp32; results.json, results.md, results.png.

A variant whose target is not implemented (or cannot run here) is reported as 'unavailable' with
the reason, one that breaks as 'failed' with its error; the others still run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from bitexport import __version__
from bitexport.bench import bandwidth as bw
from bitexport.bench import proc
from bitexport.log import progress
from bitexport.bench.roofline import REFERENCE_BITS, ratios, roofline
from bitexport.runtime.generate import agreement
from bitexport.errors import BitexportError, InputError

log = logging.getLogger("bitexport")


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: str  # "bundle" (a target's export), "reference" (PyTorch eager) or "llamacpp"
    target: str | None = None
    weights: str | None = None  # --weights of the target, or the llama.cpp format
    head: str = "int4"
    options: tuple[tuple[str, str], ...] = ()  # other config options, (name, CLI value)
    extra: bool = False  # measured only when asked for by --variants (head formats, activation forms)


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("et-tq2", "ExecuTorch tq2", "bundle", "executorch", "tq2", "int4"),
    Variant("et-int4", "ExecuTorch int4 (stock runtime)", "bundle", "executorch", "int4", "int4"),
    Variant("et-fp32", "ExecuTorch fp32 (XNNPACK)", "bundle", "executorch", "fp32", "fp32"),
    Variant("onnx-tq2", "ONNX 2-bit (MatMulNBits)", "bundle", "onnx", "tq2", "int4"),
    Variant("onnx-fp32", "ONNX fp32", "bundle", "onnx", "fp32", "fp32"),
    Variant("reference", "PyTorch reference (eager)", "reference", head="fp32"),
    Variant("llamacpp-tq2_0", "llama.cpp TQ2_0", "llamacpp", weights="tq2_0"),
    Variant("llamacpp-tq1_0", "llama.cpp TQ1_0", "llamacpp", weights="tq1_0"),
    # issue 14: head formats and activation forms, side by side with the defaults above
    Variant("et-tq2-head-int8", "ExecuTorch tq2, int8 head", "bundle", "executorch", "tq2", "int8", extra=True),
    Variant("et-tq2-head-fp32", "ExecuTorch tq2, fp32 head", "bundle", "executorch", "tq2", "fp32", extra=True),
    Variant("et-int4-exact", "ExecuTorch int4, exact activations", "bundle", "executorch", "int4", "int4",
            (("int4_activations", "exact"),), extra=True),
    # issue 16: the KV cache in half precision (attention reads half the bytes; x86 may convert in software)
    Variant("et-tq2-kv-fp16", "ExecuTorch tq2, fp16 KV cache", "bundle", "executorch", "tq2", "int4",
            (("kv_cache", "fp16"),), extra=True),
    Variant("et-tq2-kv-bf16", "ExecuTorch tq2, bf16 KV cache", "bundle", "executorch", "tq2", "int4",
            (("kv_cache", "bf16"),), extra=True),
    Variant("onnx-tq2-head-int8", "ONNX 2-bit, int8 head", "bundle", "onnx", "tq2", "int8", extra=True),
    Variant("onnx-tq2-head-fp16", "ONNX 2-bit, fp16 head", "bundle", "onnx", "tq2", "fp16", extra=True),
    Variant("onnx-tq2-head-fp32", "ONNX 2-bit, fp32 head", "bundle", "onnx", "tq2", "fp32", extra=True),
    Variant("onnx-tq2-exact", "ONNX 2-bit, exact activations", "bundle", "onnx", "tq2", "int4",
            (("activations", "exact"),), extra=True),
    # issue 18: embedding formats (with the default int4 head unless named)
    *(Variant(f"et-tq2-emb-{e}", f"ExecuTorch tq2, {e} embedding", "bundle", "executorch", "tq2", "int4",
              (("embedding", e),), extra=True) for e in ("fp32", "int8", "int4")),
    *(Variant(f"onnx-tq2-emb-{e}", f"ONNX 2-bit, {e} embedding", "bundle", "onnx", "tq2", "int4",
              (("embedding", e),), extra=True) for e in ("fp32", "fp16", "int8", "int4")),
    Variant("onnx-tq2-head-int8-emb-int8", "ONNX 2-bit, int8 head + int8 embedding (one table)", "bundle", "onnx",
            "tq2", "int8", (("embedding", "int8"),), extra=True),
    *(Variant(f"coreml-tq2-emb-{e}", f"Core ML tq2, {e} embedding", "bundle", "coreml", "tq2", "int4",
              (("embedding", e),), extra=True) for e in ("fp16", "int8", "int4")),
)}
DEFAULT_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.kind != "llamacpp" and not v.extra)
LLAMACPP_VARIANTS = tuple(k for k, v in VARIANTS.items() if v.kind == "llamacpp")

# every variant's record carries every one of these (None where it does not apply or failed)
FIELDS = (
    "key", "label", "status", "reason", "runtime", "weight_format", "file_bytes", "bits_per_ternary_weight",
    "head_format", "export_s", "export_peak_rss_bytes", "prefill_tokens_per_s", "decode_tokens_per_s",
    "peak_rss_bytes", "new_tokens", "threads_applied", "agreement", "bytes_per_token", "roofline_tokens_per_s",
    "roofline_share", "ratios", "quality", "components", "ops_per_token", "details",
)



@dataclass
class SuiteOptions:
    out: Path
    model: str | None = None
    shape: str = "large"
    threads: int = 2
    repeats: int = 3
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    with_llama_cpp: bool = False
    prompt_len: int = 128
    new_tokens: int = 128
    keep_work: bool = False
    seed: int = 0
    command: str = ""
    bandwidth_mb: int = bw.DEFAULT_BUFFER_MB  # tests shrink it; a real run must exceed the caches
    max_wait_quiet_s: float = 600.0  # before each measurement, wait this long at most for idle CPUs
    quality: bool | None = None  # perplexity of every variant (None: when MODEL is the demo model)
    quality_tokens: int = 4096  # tokens scored (bench/quality.py)


@dataclass
class Record:
    variant: Variant
    status: str = "ok"
    reason: str | None = None
    values: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    # where it runs from
    bundle: str | None = None
    artifact: int = 0
    gguf: str | None = None

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def to_dict(self) -> dict:
        d = {k: None for k in FIELDS}
        d.update(self.values)
        d.update(key=self.variant.key, label=self.variant.label, status=self.status, reason=self.reason)
        return d


_T0 = time.perf_counter()


def step(msg: str) -> None:
    """One line on bitexport's logger, with the seconds since the suite started."""
    log.info("bench %5.0fs: %s", time.perf_counter() - _T0, msg)


# --- 1. the model -----------------------------------------------------------------------------------

def prepare_model(opts: SuiteOptions, work: Path) -> tuple[Path, dict, Path | None]:
    """(model folder our exports read, model summary, 1bitLLM folder for llama.cpp or None)."""
    from bitexport.formats import load_model
    from bitexport.formats.save_hf import save_hf_bitnet

    llama = any(VARIANTS[k].kind == "llamacpp" for k in opts.variants)
    max_seq_len = opts.prompt_len + opts.new_tokens
    if opts.model:
        path = Path(opts.model)
        # loaded once here: a bad folder fails now rather than once per variant
        loaded = load_model(path, max_seq_len)
        summary = {"name": loaded.name, "path": str(path.resolve()), "synthetic": False,
                   "format": loaded.source_format}
    else:
        from bitexport.bench.shapes import SHAPES, synthetic_model

        if opts.shape not in SHAPES:
            raise InputError(f"unknown --shape {opts.shape!r}; choose one of {', '.join(SHAPES)}")
        step(f"building the {opts.shape} shape with random ternary weights")
        loaded = synthetic_model(opts.shape, max_seq_len=max_seq_len, seed=opts.seed)
        # random weights must still give exactly prompt + new tokens: no EOS
        loaded.config = replace(loaded.config, eos_token_ids=())
        loaded.model.config = loaded.config
        summary = {"name": f"synthetic-{opts.shape}", "shape": opts.shape, "synthetic": True,
                   "weights": "random ternary codes, seed %d" % opts.seed}
    cfg = loaded.config
    # the HF bitnet format always has the sub-norms: a shape without them (large, the 1bitLLM
    # shape) is benchmarked from the 1bitLLM folder, which our loader reads back exactly
    hf = opts.model is None and cfg.attn_sub_norm and cfg.ffn_sub_norm
    onebit = None
    if llama or (opts.model is None and not hf):
        from bitexport.bench.llamacpp import shadow_exactness, write_1bitllm

        step("writing the model as a 1bitLLM folder" + (" (for llama.cpp's converter)" if llama else ""))
        try:
            # a random model takes the scales its 1bitLLM copy can hold (first, before any other copy)
            folder = work / (f"synthetic-{opts.shape}" if opts.model is None else "model-1bitllm")
            onebit = write_1bitllm(loaded, folder, adopt_scales=opts.model is None)
            summary["llama_cpp_copy"] = shadow_exactness(loaded, onebit)
        except InputError as e:
            if opts.model is None and not hf:
                raise
            summary["llama_cpp_copy"] = {"error": str(e)}
    if opts.model is None:
        if hf:
            # autobitlinear stores gamma itself (float32): the checkpoint holds our scales to the bit
            path = save_hf_bitnet(loaded.model, work / f"synthetic-{opts.shape}-hf", loaded.tokenizer_path,
                                  linear_class="autobitlinear")
        else:
            path = onebit
            copy = summary["llama_cpp_copy"]
            if copy["code_mismatches"] or copy["scale_mismatches"]:
                raise BitexportError(f"the 1bitLLM copy of the {opts.shape} shape does not hold its weights exactly "
                                     f"({copy}); this is a bug in bench/llamacpp.py")
    summary["config"] = cfg.to_dict()
    summary["parameters"] = cfg.parameter_counts()
    summary["path"] = str(path)
    if summary["synthetic"]:
        shutil.rmtree(loaded.source_path, ignore_errors=True)  # synthetic_model's temporary tokenizer folder
    del loaded
    return path, summary, onebit


# --- 2. exports -------------------------------------------------------------------------------------

def export_variant(rec: Record, model: Path, opts: SuiteOptions, work: Path) -> None:
    v = rec.variant
    out = work / "bundles" / v.key
    args = ["export", "--model", str(model), "--target", v.target, "--weights", v.weights, "--head", v.head,
            "--max-seq-len", str(opts.prompt_len + opts.new_tokens), "--out", str(out)]
    args += [a for name, value in v.options for a in ("--option", f"{name}={value}")]
    rc, result, err, wall, rss = proc.worker(args, proc.EXPORT_TIMEOUT_S)
    if rc != 0:
        rec.fail("unavailable" if rc == 3 else "failed", proc.child_error(err, rc))
        return
    matching = [i for i, a in enumerate(result["artifacts"]) if a["runtime"] != "coreml"]
    art = result["artifacts"][matching[0] if matching else 0]
    rec.bundle, rec.artifact = result["bundle"], result["artifacts"].index(art)
    details = art.get("details") or {}
    rec.values.update(
        runtime=art["runtime"], weight_format=art["weight_format"], file_bytes=art["bytes"],
        bits_per_ternary_weight=details.get("ternary_bits_per_weight"), head_format=details.get("head"),
        components=details.get("components"), export_s=result["export_s"], export_peak_rss_bytes=rss, details=details,
        # kernel + delegate calls of one decode step, read from the .pte (ExecuTorch only)
        ops_per_token=(details.get("ops_per_token") or {}).get("total"),
    )


def export_llamacpp(recs: list[Record], onebit: Path | None, summary: dict, opts: SuiteOptions, work: Path) -> dict:
    from bitexport.bench import llamacpp

    info: dict = {"version": llamacpp.VERSION}
    if onebit is None:
        for r in recs:
            r.fail("unavailable", summary.get("llama_cpp_copy", {}).get("error", "no model for llama.cpp"))
        return info
    try:
        lc = llamacpp.ensure_llamacpp(progress=step)
    except BitexportError as e:
        for r in recs:
            r.fail("unavailable", str(e).splitlines()[0])
        return info
    info.update(bin=str(lc.bin), route="convert_hf_to_gguf.py --outtype tq2_0|tq1_0 (token embedding F16, the converter's default)")
    for r in recs:
        fmt = r.variant.weights
        step(f"exporting {r.variant.key} (llama.cpp converter, --outtype {fmt})")
        try:
            res = llamacpp.convert(lc, onebit, fmt, work / f"model-{fmt}.gguf")
        except BitexportError as e:
            r.fail("failed", str(e).splitlines()[0])
            continue
        r.gguf = res["path"]
        types = res["tensor_types"]
        ternary_ok = types.get(fmt.upper(), 0) > 0
        head = "F16" if "F16" in types else "F32"
        r.values.update(
            runtime=f"llama.cpp {llamacpp.VERSION} (llama-bench)", weight_format=fmt.upper(), file_bytes=res["bytes"],
            bits_per_ternary_weight=llamacpp.BITS_PER_WEIGHT[fmt] if ternary_ok else 16.0, head_format=head,
            export_s=res["export_s"], export_peak_rss_bytes=res["export_peak_rss_bytes"],
            details={"tensor_types": types, "note": None if ternary_ok else
                     f"rows not a multiple of {llamacpp.BLOCK}: the converter fell back to F16"},
        )
        step(f"  {r.variant.key}: {res['bytes'] / 1e6:.1f} MB in {res['export_s']:.1f} s")
    info["llamacpp"] = lc
    return info


# --- 4. measurements --------------------------------------------------------------------------------

def measure_once(rec: Record, opts: SuiteOptions, prompt_file: Path, model: Path, lc) -> dict:
    v = rec.variant
    if v.kind == "llamacpp":
        from bitexport.bench import llamacpp

        r = llamacpp.bench(lc, Path(rec.gguf), opts.threads, opts.prompt_len, opts.new_tokens)
        return {**r, "new_tokens": opts.new_tokens, "threads_applied": True}
    args = ["measure", "--threads", str(opts.threads), "--prompt", str(prompt_file), "--new-tokens", str(opts.new_tokens)]
    if v.kind == "reference":
        args += ["--model", str(model), "--max-seq-len", str(opts.prompt_len + opts.new_tokens)]
    else:
        args += ["--bundle", rec.bundle, "--artifact", str(rec.artifact)]
    rc, result, err, wall, rss = proc.worker(args, proc.MEASURE_TIMEOUT_S)
    if rc != 0:
        raise _Unavailable("unavailable" if rc == 3 else "failed", proc.child_error(err, rc))
    return {**result, "peak_rss_bytes": rss}


class _Unavailable(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def summarize(rec: Record) -> None:
    runs = rec.runs
    if not runs:
        return
    rec.values["prefill_tokens_per_s"] = _spread([r["prefill_tokens_per_s"] for r in runs])
    rec.values["decode_tokens_per_s"] = _spread([r["decode_tokens_per_s"] for r in runs])
    rec.values["peak_rss_bytes"] = _spread([r["peak_rss_bytes"] for r in runs])
    rec.values["new_tokens"] = runs[0].get("new_tokens")
    rec.values["threads_applied"] = all(r.get("threads_applied") for r in runs)
    rec.values.setdefault("details", {})
    rec.values["details"] = {**(rec.values["details"] or {}),
                             "load_average_max": max(r.get("load_average", 0.0) for r in runs),
                             "cpu_busy_before_max": max(r.get("cpu_busy_before", 0.0) for r in runs)}


# --- the run ----------------------------------------------------------------------------------------

def run_suite(opts: SuiteOptions) -> dict:
    global _T0
    t_start = _T0 = time.perf_counter()
    unknown = [k for k in opts.variants if k not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if opts.with_llama_cpp:
        opts.variants = tuple(dict.fromkeys(opts.variants + LLAMACPP_VARIANTS))
    if opts.repeats < 1 or opts.threads < 1 or opts.prompt_len < 1 or opts.new_tokens < 2:
        raise InputError("--repeats and --threads must be at least 1, --new-tokens at least 2")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    machine = proc.machine_info()
    load_start = os.getloadavg()
    step(f"machine: {machine['cpu']}, {machine['cores']} cores, load average {load_start[0]:.1f}")
    if load_start[0] > (machine["cores"] or 1):
        step("the machine is busy (load average above the core count): figures will be noisy")

    model_path, model_summary, onebit = prepare_model(opts, work)
    from bitexport.model.config import ModelConfig

    cfg = ModelConfig.from_dict(model_summary["config"])
    records = [Record(VARIANTS[k]) for k in opts.variants]

    for rec in records:
        v = rec.variant
        if v.kind == "bundle":
            step(f"exporting {v.key} ({v.target}, --weights {v.weights}, head {v.head})")
            export_variant(rec, model_path, opts, work)
            if rec.status == "ok":
                step(f"  {v.key}: {rec.values['file_bytes'] / 1e6:.1f} MB in {rec.values['export_s']:.1f} s, "
                         f"peak {rec.values['export_peak_rss_bytes'] / 1e6:.0f} MB")
            else:
                step(f"  {v.key}: {rec.status}: {rec.reason}")
        elif v.kind == "reference":
            size = sum(p.stat().st_size for p in model_path.glob("*.safetensors"))
            rec.values.update(runtime="pytorch (eager)", weight_format="int8 codes in memory", file_bytes=size,
                              bits_per_ternary_weight=REFERENCE_BITS, head_format="fp32", details={"embedding": "fp32"})
    llama_recs = [r for r in records if r.variant.kind == "llamacpp"]
    llama_info = export_llamacpp(llama_recs, onebit, model_summary, opts, work) if llama_recs else {}
    lc = llama_info.pop("llamacpp", None)

    proc.wait_for_quiet(opts.max_wait_quiet_s)
    step(f"measuring read bandwidth (1 and {opts.threads} threads)")
    band = {"start": [bw.measure_bandwidth(1, opts.bandwidth_mb).to_dict(),
                      bw.measure_bandwidth(opts.threads, opts.bandwidth_mb).to_dict()]}
    step(f"  {band['start'][0]['gb_per_s']:.1f} GB/s (1 thread), {band['start'][1]['gb_per_s']:.1f} GB/s "
             f"({opts.threads} threads)")

    rng = random.Random(opts.seed)
    # ids 0-2 are special tokens in most vocabularies; the rest are all plain text tokens
    prompt = [rng.randrange(3, cfg.vocab_size) for _ in range(opts.prompt_len)]
    prompt_file = work / "prompt.json"
    prompt_file.write_text(json.dumps(prompt))

    runnable = [r for r in records if r.status == "ok"]
    plan = [(rep, rec) for rep in range(opts.repeats) for rec in runnable]
    for rep, rec in progress(plan, "measuring", total=len(plan)):
        if rec.status != "ok":
            continue
        if rec.variant.kind == "reference" and rep > 0:
            # eager PyTorch decodes a large model at well under 1 token/s: one run gives the
            # tokens the others are compared with, and its speed for scale
            continue
        waited, busy = proc.wait_for_quiet(opts.max_wait_quiet_s)
        if waited > 5:
            step(f"waited {waited:.0f} s for other processes to leave the CPUs (busy {100 * busy:.0f} %)")
        load = os.getloadavg()[0]
        try:
            res = measure_once(rec, opts, prompt_file, model_path, lc)
        except _Unavailable as e:
            rec.fail(e.status, e.reason)
            step(f"rep {rep + 1}/{opts.repeats} {rec.variant.key}: {e.status}: {e.reason}")
            continue
        except BitexportError as e:
            rec.fail("failed", str(e).splitlines()[0])
            step(f"rep {rep + 1}/{opts.repeats} {rec.variant.key}: failed: {rec.reason}")
            continue
        res["load_average"] = load  # machine noise: other processes sharing the cores
        res["cpu_busy_before"] = busy
        rec.runs.append(res)
        step(f"rep {rep + 1}/{opts.repeats} {rec.variant.key}: prefill {res['prefill_tokens_per_s']:.1f} tok/s, "
             f"decode {res['decode_tokens_per_s']:.1f} tok/s, peak {res['peak_rss_bytes'] / 1e6:.0f} MB")

    from bitexport.bench.quality import suite_quality

    quality_info = suite_quality(records, opts, model_path, cfg, work, step, lc)

    proc.wait_for_quiet(opts.max_wait_quiet_s)
    step(f"measuring read bandwidth again ({opts.threads} threads)")
    band["end"] = [bw.measure_bandwidth(opts.threads, opts.bandwidth_mb).to_dict()]
    # the roofline is a physical limit: noise only lowers a measurement, so take the higher one
    gb_per_s = max(band["start"][1]["gb_per_s"], band["end"][0]["gb_per_s"])
    band["roofline_gb_per_s"] = gb_per_s

    ref = next((r for r in records if r.variant.kind == "reference" and r.runs), None)
    ref_tokens = ref.runs[0]["tokens"] if ref else None
    for rec in records:
        summarize(rec)
        if rec.runs and rec.variant.kind != "llamacpp":
            rec.values["agreement"] = agreement(rec.runs[0].get("tokens"), ref_tokens)
            if len({tuple(r.get("tokens", ())) for r in rec.runs}) > 1:
                rec.values.setdefault("details", {})
                (rec.values["details"] or {})["tokens_differ_between_repetitions"] = True
        if rec.status == "ok":
            roofline(rec, cfg, opts.prompt_len, opts.new_tokens, gb_per_s)
    ratios(records)

    load_end = os.getloadavg()
    report = {
        "bitexport_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": opts.command,
        "machine": {**machine, "load_average_start": load_start[0], "load_average_end": load_end[0]},
        "versions": proc.versions(),
        "model": model_summary,
        "settings": {"threads": opts.threads, "repeats": opts.repeats, "prompt_tokens": opts.prompt_len,
                     "new_tokens": opts.new_tokens, "max_seq_len": opts.prompt_len + opts.new_tokens,
                     "variants": list(opts.variants), "seed": opts.seed},
        "bandwidth": band,
        "llama_cpp": {k: v for k, v in llama_info.items()} or None,
        "quality": quality_info,
        "variants": [r.to_dict() for r in records],
        "notes": [
            "tokens/s: median over the repetitions (min and max beside it); each measurement in its own process; "
            "the PyTorch reference runs once (it is there for its tokens)",
            "decode tokens/s counts the tokens after the first (the first comes out of prefill)",
            "llama.cpp: llama-bench pp/tg tests (tg decodes from an empty context, ours after the prompt); "
            "its greedy tokens are not compared",
            "roofline: read bandwidth / bytes a decode step must read (ternary weights, the whole head, one "
            "embedding row, norms, the K/V cache so far, in the cache's own dtype)",
            "ops/token: kernel and delegate calls of one ExecuTorch forward (its execution plan); the breakdown "
            "by operator is in details.ops_per_token",
        ],
    }
    if not opts.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)

    from bitexport.bench.report import write_outputs

    paths = write_outputs(report, out)
    for p in paths.values():
        if p:
            step(f"wrote {p}")
    return report


__all__ = ["FIELDS", "VARIANTS", "DEFAULT_VARIANTS", "SuiteOptions", "run_suite"]
