"""ONNX target benchmark: the 2-bit bundle against an fp32 ONNX export of the same model.

    python -m bitexport.bench.onnx_bench --shape large|2b|tiny --threads 2 --out FILE.json

Builds the shape with random ternary weights (bench/shapes.py), exports each variant, then runs
each in its own subprocess through onnxruntime-genai (the runner `bitexport run` uses), so the peak
RSS is that variant's alone. Prefill: one prompt of --prompt-len tokens; decode: --new-tokens
greedy tokens, EOS ignored. Figures are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (--weights, head, embedding); "tq2" is the shipped default, "fp32" the baseline
VARIANTS = {
    "tq2": ("tq2", "int4", "fp32"),
    "tq2-emb4": ("tq2", "int4", "int4"),
    "int4": ("int4", "int4", "fp32"),
    "fp32": ("fp32", "fp32", "fp32"),
}


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _busy_ticks() -> tuple[int, int]:
    """(busy clock ticks of the whole machine, of this process) so far."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    machine = sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)  # minus idle and iowait
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return machine, int(fields[11]) + int(fields[12])  # utime + stime


def worker(folder: str, threads: int, prompt_len: int, new_tokens: int, repeats: int, max_seq_len: int) -> dict:
    """Runs in the subprocess: load the bundle folder with genai, time prefill and decode."""
    import random

    from bitexport.runners.onnx_genai import OnnxGenaiRunner

    baseline = _status_kib("VmRSS")
    t0 = time.perf_counter()
    runner = OnnxGenaiRunner(folder, max_seq_len, threads=threads, ignore_eos=True)
    load_s = time.perf_counter() - t0
    vocab = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["vocab_size"]
    rng = random.Random(0)
    prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
    runner.generate(prompt[:8], 4)  # warm-up: first-run allocations and thread-pool start
    runs = []
    for _ in range(repeats):
        busy0, own0, t0 = *_busy_ticks(), time.perf_counter()
        gen = runner.generate(prompt, new_tokens)
        busy1, own1, wall = *_busy_ticks(), time.perf_counter() - t0
        runs.append(
            {
                "prefill_tokens_per_s": gen.stats.prefill_tokens_per_s,
                "decode_tokens_per_s": gen.stats.decode_tokens_per_s,
                "new_tokens": gen.stats.new_tokens,
                "prefill_s": gen.stats.prefill_s,
                "decode_s": gen.stats.decode_s,
                # CPU the rest of the machine used meanwhile, in cores: other jobs on a shared
                # machine slow a 2-thread run down; compare figures only from quiet runs
                "other_load_cores": round((busy1 - busy0 - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / wall, 2),
            }
        )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child would report the
    # parent's peak (the exporting parent holds the whole model); VmHWM starts afresh with exec
    peak = _status_kib("VmHWM")
    return {
        "load_s": load_s,
        "runs": runs,
        "prefill_tokens_per_s": max(r["prefill_tokens_per_s"] for r in runs),
        "decode_tokens_per_s": max(r["decode_tokens_per_s"] for r in runs),
        "peak_rss_bytes": peak * 1024,
        "rss_before_load_bytes": baseline * 1024,
    }


def folder_bytes(folder: Path) -> dict:
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    model = sum(v for k, v in files.items() if k.startswith("model.onnx"))
    return {"model_bytes": model, "folder_bytes": sum(files.values())}


def export_variants(shape: str, variants: list[str], work: Path, max_seq_len: int) -> dict[str, dict]:
    from bitexport.bench.shapes import synthetic_model
    from bitexport.targets.base import ExportOptions
    from bitexport.targets.onnx import TARGET

    t0 = time.perf_counter()
    loaded = synthetic_model(shape, max_seq_len=max_seq_len)
    print(f"[bench] built {shape} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    out = {}
    for name in variants:
        weights, head, emb = VARIANTS[name]
        t0 = time.perf_counter()
        opts = ExportOptions(weights=weights, max_seq_len=max_seq_len, head=head, embedding=emb)
        art = TARGET.emit(loaded, opts, work / name)[0]
        folder = work / name / art.path
        out[name] = {"weights": weights, "head": head, "embedding": emb, "folder": str(folder), "export_s": time.perf_counter() - t0,
                     **folder_bytes(folder), **{k: art.details[k] for k in ("ternary_bits_per_weight", "block_sizes", "accuracy_level")}}
        print(f"[bench] exported {name} in {out[name]['export_s']:.1f} s ({out[name]['model_bytes'] / 1e6:.1f} MB)", file=sys.stderr, flush=True)
        gc.collect()
    params = loaded.config.parameter_counts()
    del loaded
    gc.collect()
    return out | {"_parameters": params}


def run_variant(folder: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bitexport.bench.onnx_bench", "--worker", folder, "--threads", str(args.threads),
           "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
           "--max-seq-len", str(args.max_seq_len)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {folder} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="large")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default="tq2,fp32", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="measured runs per variant; the best is reported")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--workdir", type=Path, help="keep the exported bundles here (default: a temporary folder)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.prompt_len, args.new_tokens, args.repeats, args.max_seq_len)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bitexport-onnx-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        exported = export_variants(args.shape, variants, work, args.max_seq_len)
        params = exported.pop("_parameters")
        results = {}
        for name in variants:
            print(f"[bench] running {name}", file=sys.stderr, flush=True)
            results[name] = exported[name] | run_variant(exported[name]["folder"], args)
            del results[name]["folder"]
    report = {
        "benchmark": "onnx",
        "shape": args.shape,
        "parameters": params,
        "threads": args.threads,
        "prompt_tokens": args.prompt_len,
        "new_tokens": args.new_tokens,
        "runtime": _versions(),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "variants": results,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if "tq2" in results and "fp32" in results:
        a, b = results["tq2"], results["fp32"]
        report["tq2_vs_fp32"] = {
            "decode_speedup": a["decode_tokens_per_s"] / b["decode_tokens_per_s"],
            "prefill_speedup": a["prefill_tokens_per_s"] / b["prefill_tokens_per_s"],
            "file_ratio": b["model_bytes"] / a["model_bytes"],
            "peak_rss_ratio": b["peak_rss_bytes"] / a["peak_rss_bytes"],
        }
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def format_report(r: dict) -> str:
    lines = [f"ONNX benchmark, shape {r['shape']} ({r['parameters']['total'] / 1e6:.1f}M parameters), {r['threads']} threads, "
             f"prompt {r['prompt_tokens']}, {r['new_tokens']} new tokens"]
    lines.append(f"{'variant':9} {'head':5} {'embed':5} {'file MB':>9} {'bits/w':>7} {'prefill t/s':>12} {'decode t/s':>11} {'peak RSS MB':>12} {'other load':>10}")
    for name, v in r["variants"].items():
        lines.append(
            f"{name:9} {v['head']:5} {v['embedding']:5} {v['model_bytes'] / 1e6:9.1f} {v['ternary_bits_per_weight']:7.3f} "
            f"{v['prefill_tokens_per_s']:12.1f} {v['decode_tokens_per_s']:11.1f} {v['peak_rss_bytes'] / 1e6:12.0f} "
            f"{max(r['other_load_cores'] for r in v['runs']):10.2f}"
        )
    if "tq2_vs_fp32" in r:
        c = r["tq2_vs_fp32"]
        lines.append(f"tq2 vs fp32: decode x{c['decode_speedup']:.2f}, prefill x{c['prefill_speedup']:.2f}, "
                     f"file /{c['file_ratio']:.1f}, peak RSS /{c['peak_rss_ratio']:.1f}")
    return "\n".join(lines)


def _versions() -> dict:
    import onnxruntime
    import onnxruntime_genai

    return {"onnxruntime": onnxruntime.__version__, "onnxruntime_genai": onnxruntime_genai.__version__}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
