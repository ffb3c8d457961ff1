"""llama-bench on a GGUF file: prefill and decode tokens/s with the suite's thread count."""

from __future__ import annotations

import json
from pathlib import Path

from bitexport.bench.llamacpp.build import LlamaCpp
from bitexport.bench.proc import run_with_rusage
from bitexport.errors import EnvironmentProblem


def bench(lc: LlamaCpp, gguf: Path, threads: int, n_prompt: int = 128, n_gen: int = 128, repetitions: int = 1) -> dict:
    """One llama-bench run (pp n_prompt, tg n_gen): tokens/s of each, and llama-bench's peak RSS."""
    cmd = [str(lc.tool("llama-bench")), "-m", str(gguf), "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
           "-r", str(repetitions), "-o", "json"]
    rc, out, err, wall, rss = run_with_rusage(cmd, timeout=1800)
    if rc != 0:
        tail = "\n".join(err.strip().splitlines()[-8:])
        raise EnvironmentProblem(f"llama-bench failed on {gguf} (exit {rc}):\n{tail}")
    records = json.loads(out)
    result: dict = {"peak_rss_bytes": rss, "wall_s": wall}
    for r in records:
        if r.get("n_gen", 0) == 0 and r.get("n_prompt", 0) > 0:
            result["prefill_tokens_per_s"] = float(r["avg_ts"])
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0:
            result["decode_tokens_per_s"] = float(r["avg_ts"])
            result["model_params"] = int(r.get("model_n_params", 0))
            result["cpu_info"] = r.get("cpu_info", "")
            result["build_commit"] = r.get("build_commit", "")
    if "prefill_tokens_per_s" not in result or "decode_tokens_per_s" not in result:
        raise EnvironmentProblem(f"llama-bench printed no pp/tg results for {gguf}: {out[:300]}")
    return result


