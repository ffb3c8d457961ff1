"""Perplexity of a variant, teacher-forced, on a fixed token sequence (the benchmark's quality).

The sequence is cut into consecutive windows of the KV length; in each window every token after
the first is scored given the ones before it (the first token of a window has no context and is not
scored). The PyTorch reference computes a window in one forward; the exported artifacts return the
logits of the last position only (the runners' contract), so they are fed one token at a time
through their own KV cache: ExecuTorch through ExecutorchRunner.logits, ONNX through a plain
onnxruntime.InferenceSession on the bundle's model.onnx (genai exposes no logits per step).

Perplexity = exp(sum NLL / tokens scored), NLL in float64 from the variant's own logits. The text:
the demo model's validation split (train/data.py's split, val fraction 0.1, the model's own
tokenizer); a random-weight model has no text, so it is scored on seeded random token ids (its
perplexity is then large for every variant; what is compared is the difference from the reference).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

VAL_FRACTION = 0.1  # the demo model's recipe (bitexport train --val-fraction default)
DEFAULT_MAX_TOKENS = 4096  # enough for a paired difference of 0.1 %; the whole split is 38k tokens


@dataclass
class Perplexity:
    nll_sum: float
    tokens_scored: int
    windows: int
    characters: int | None = None  # of the scored text, when it is text

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / max(self.tokens_scored, 1))

    def to_dict(self) -> dict:
        return {**asdict(self), "perplexity": self.perplexity}


def windows(tokens: list[int], length: int) -> list[list[int]]:
    """Consecutive non-overlapping windows of `length` tokens (a shorter last one if >= 2 tokens)."""
    if length < 2:
        raise ValueError("a perplexity window needs at least 2 tokens")
    out = [tokens[i:i + length] for i in range(0, len(tokens), length)]
    return [w for w in out if len(w) >= 2]


def window_nll(logits: np.ndarray, window: list[int]) -> float:
    """Sum of -log p(window[i+1] | window[:i+1]) from logits [len(window) - 1 (or more), V]."""
    z = np.asarray(logits[: len(window) - 1], dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(window) - 1), window[1:]].sum())


def perplexity(window_logits: Callable[[list[int]], np.ndarray], tokens: list[int], length: int) -> Perplexity:
    """Teacher-forced perplexity of `tokens` with `window_logits(window) -> logits [n, V]` (row i
    predicts window[i + 1])."""
    ws = windows(tokens, length)
    nll = sum(window_nll(window_logits(w), w) for w in ws)
    return Perplexity(nll, sum(len(w) - 1 for w in ws), len(ws))


# --- logits per window, one function per runtime -----------------------------------------------------

def reference_logits(model) -> Callable[[list[int]], np.ndarray]:
    """The PyTorch reference decoder: one forward over the window (all positions' logits)."""

    def run(window: list[int]) -> np.ndarray:
        model.reset_cache()
        keep = model.last_logits_only
        model.last_logits_only = False
        try:
            with torch.no_grad():
                return model(torch.tensor([window]), torch.tensor([0]))[0].float().numpy()
        finally:
            model.last_logits_only = keep

    return run


def stepwise(step: Callable[[int, int], np.ndarray]) -> Callable[[list[int]], np.ndarray]:
    """Window logits from a runtime that returns the last position's logits: `step(token, pos)`
    feeds one token at `pos` (pos 0 starts a new sequence) and returns logits [V]."""

    def run(window: list[int]) -> np.ndarray:
        return np.stack([np.asarray(step(t, i), dtype=np.float32).reshape(-1) for i, t in enumerate(window[:-1])])

    return run


def executorch_step(runner) -> Callable[[int, int], np.ndarray]:
    """ExecutorchRunner: positions past start_pos are never read, so pos 0 needs no cache reset."""
    return lambda token, pos: runner.logits([token], pos).float().numpy()


def onnx_step(model_path: str | Path, threads: int | None = None) -> Callable[[int, int], np.ndarray]:
    """A plain InferenceSession on a bundle's model.onnx, feeding back its present K/V."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    pasts = {i.name: i.shape for i in sess.get_inputs() if i.name.startswith("past_key_values.")}
    state: dict[str, np.ndarray] = {}

    def step(token: int, pos: int) -> np.ndarray:
        if pos == 0:
            for name, shape in pasts.items():  # [batch, kv_heads, past, head_dim]
                state[name] = np.zeros((1, shape[1], 0, shape[3]), np.float32)
        feeds = {**state, "input_ids": np.array([[token]], np.int64),
                 "attention_mask": np.ones((1, pos + 1), np.int64)}
        out = dict(zip(names, sess.run(None, feeds)))
        for name in pasts:
            state[name] = out[name.replace("past_key_values.", "present.")]
        return out["logits"].reshape(-1)

    return step


# --- the scored text ----------------------------------------------------------------------------------

def demo_validation_tokens(tokenizer_path: str | Path, data_path: str | Path | None = None,
                           max_tokens: int | None = DEFAULT_MAX_TOKENS) -> tuple[list[int], int]:
    """(token ids, characters they cover) of the demo model's validation split."""
    from tokenizers import Tokenizer

    from bitexport.train.data import default_data_path, encode, read_corpus, split_text

    _, val = split_text(read_corpus(data_path or default_data_path()), VAL_FRACTION)
    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = encode(tok, val).tolist()
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
    return ids, len(tok.decode(ids))


def random_tokens(vocab_size: int, n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(3, vocab_size, size=n).tolist()  # ids 0-2: special tokens in most vocabularies


def relative_difference(ppl: float, ref: float) -> float:
    """(ppl - ref) / ref: +0.005 is 0.5 % worse than the reference."""
    return (ppl - ref) / ref


def attach(records: Iterable, results: dict[str, dict]) -> None:
    """Put each variant's quality (and its difference from the reference) into its record."""
    ref = results.get("reference")
    for rec in records:
        q = results.get(rec.variant.key)
        if q is None:
            continue
        if ref and "perplexity" in q and "perplexity" in ref:
            q["vs_reference"] = relative_difference(q["perplexity"], ref["perplexity"])
        rec.values["quality"] = q


def is_demo_model(model: str | Path | None) -> bool:
    from bitexport.cli import DEMO_MODEL

    return model is not None and Path(model).resolve() == DEMO_MODEL.resolve()


def suite_quality(records: list, opts, model_path: Path, cfg, work: Path, progress: Callable[[str], None]) -> dict | None:
    """The benchmark's quality step: every ok variant but llama.cpp's scored in a worker process of
    its own on the same tokens; results (and the difference from the reference) go into the records.
    Runs when opts.quality is set, or when it is None and MODEL is the demo model."""
    from bitexport.bench import proc

    wanted = opts.quality if opts.quality is not None else is_demo_model(opts.model)
    if not wanted:
        return None
    window = opts.prompt_len + opts.new_tokens  # the exports' KV length
    if is_demo_model(opts.model):
        tokens, chars = demo_validation_tokens(Path(model_path) / "tokenizer.json", max_tokens=opts.quality_tokens)
        text = f"the demo model's validation split (first {len(tokens)} tokens, {chars} characters)"
    else:
        tokens, chars = random_tokens(cfg.vocab_size, opts.quality_tokens, opts.seed), None
        text = f"{len(tokens)} random token ids (seed {opts.seed}): no text fits a random-weight model"
    path = work / "quality-tokens.json"
    path.write_text(json.dumps(tokens))
    progress(f"quality: teacher-forced perplexity on {text}, windows of {window}")
    results: dict[str, dict] = {}
    for rec in records:
        v = rec.variant
        if rec.status != "ok" or v.kind == "llamacpp":
            continue
        args = ["quality", "--tokens", str(path), "--window", str(window), "--threads", str(opts.threads)]
        args += ["--model", str(model_path)] if v.kind == "reference" else ["--bundle", rec.bundle, "--artifact", str(rec.artifact)]
        rc, result, err, _, _ = proc.worker(args, proc.MEASURE_TIMEOUT_S)
        if rc != 0:
            results[v.key] = {"error": proc.child_error(err, rc)}
            progress(f"  quality {v.key}: {results[v.key]['error']}")
            continue
        result["characters"] = chars
        results[v.key] = result
        progress(f"  quality {v.key}: perplexity {result['perplexity']:.4f} ({result['quality_s']:.0f} s)")
    attach(records, results)
    return {"text": text, "tokens": len(tokens), "characters": chars, "window": window}


__all__ = ["Perplexity", "attach", "demo_validation_tokens", "executorch_step", "onnx_step", "perplexity",
           "random_tokens", "reference_logits", "relative_difference", "stepwise", "suite_quality", "windows"]
