"""llama.cpp's own perplexity tool on a text file, and its tokenizer on the same text.

llama-perplexity's protocol (tools/perplexity/perplexity.cpp, llama.cpp 0.3.36): the whole text
is tokenized once; the ids are cut into floor(n / n_ctx) chunks of n_ctx (the rest is dropped);
within each chunk only the second half is scored: positions n_ctx/2 .. n_ctx-2 predict the next
token, so n_ctx - n_ctx/2 - 1 tokens a chunk (the first token of a chunk becomes BOS when the
vocabulary adds one; ours does not). `bench/quality.py`'s `perplexity(..., score_from=n_ctx // 2,
full_windows=True)` scores the PyTorch reference the same way, on the same ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bitexport.bench.llamacpp.build import LlamaCpp
from bitexport.bench.proc import run_with_rusage
from bitexport.errors import EnvironmentProblem

_FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")
_CHUNKS = re.compile(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+)")


def tokenize(lc: LlamaCpp, gguf: Path, text_file: Path) -> list[int]:
    """The token ids llama.cpp's tokenizer (the GGUF's vocabulary) gives the text."""
    cmd = [str(lc.tool("llama-tokenize")), "-m", str(gguf), "-f", str(text_file), "--ids", "--log-disable"]
    rc, out, err, _, _ = run_with_rusage(cmd, timeout=600)
    line = next((ln for ln in out.splitlines() if ln.startswith("[")), None)
    if rc != 0 or line is None:
        raise EnvironmentProblem(f"llama-tokenize failed on {gguf} (exit {rc}): {err.strip().splitlines()[-1:]}")
    return json.loads(line)


def perplexity(lc: LlamaCpp, gguf: Path, text_file: Path, n_ctx: int, threads: int) -> dict:
    """llama-perplexity's final estimate on the text: perplexity, its +/-, chunks and tokens scored."""
    cmd = [str(lc.tool("llama-perplexity")), "-m", str(gguf), "-f", str(text_file), "-c", str(n_ctx),
           "-b", str(n_ctx), "-t", str(threads)]
    rc, out, err, wall, rss = run_with_rusage(cmd, timeout=3600)
    text = out + err
    final, chunks = _FINAL.search(text), _CHUNKS.search(text)
    if rc != 0 or not final or not chunks:
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise EnvironmentProblem(f"llama-perplexity failed on {gguf} (exit {rc}):\n{tail}")
    n_chunks, ctx = int(chunks.group(1)), int(chunks.group(2))
    return {"perplexity": float(final.group(1)), "plus_minus": float(final.group(2)), "windows": n_chunks,
            "tokens_scored": n_chunks * (ctx - ctx // 2 - 1), "n_ctx": ctx, "quality_s": wall,
            "peak_rss_bytes": rss}
