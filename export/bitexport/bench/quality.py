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


def windows(tokens: list[int], length: int, full_only: bool = False) -> list[list[int]]:
    """Consecutive non-overlapping windows of `length` tokens (a shorter last one if >= 2 tokens,
    unless `full_only`)."""
    if length < 2:
        raise ValueError("a perplexity window needs at least 2 tokens")
    out = [tokens[i:i + length] for i in range(0, len(tokens), length)]
    return [w for w in out if len(w) >= (length if full_only else 2)]


def window_nll(logits: np.ndarray, window: list[int], score_from: int = 0) -> float:
    """Sum of -log p(window[i+1] | window[:i+1]) for i >= score_from, from logits
    [len(window) - 1 (or more), V]."""
    z = np.asarray(logits[score_from: len(window) - 1], dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(z)), window[score_from + 1:]].sum())


def perplexity(window_logits: Callable[[list[int]], np.ndarray], tokens: list[int], length: int,
               score_from: int = 0, full_windows: bool = False) -> Perplexity:
    """Teacher-forced perplexity of `tokens` with `window_logits(window) -> logits [n, V]` (row i
    predicts window[i + 1]). The default scores every position of every window; `score_from=
    length // 2, full_windows=True` is llama-perplexity's protocol (bench/llamacpp/perplexity.py)."""
    ws = windows(tokens, length, full_windows)
    nll = sum(window_nll(window_logits(w), w, score_from) for w in ws)
    return Perplexity(nll, sum(len(w) - 1 - score_from for w in ws), len(ws))


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

def demo_validation_text(tokenizer_path: str | Path, data_path: str | Path | None = None,
                         max_tokens: int | None = DEFAULT_MAX_TOKENS) -> tuple[list[int], str]:
    """(token ids, the text they decode to) of the demo model's validation split."""
    from tokenizers import Tokenizer

    from bitexport.train.data import default_data_path, encode, read_corpus, split_text

    _, val = split_text(read_corpus(data_path or default_data_path()), VAL_FRACTION)
    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = encode(tok, val).tolist()
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
    return ids, tok.decode(ids)


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
        if ref and "perplexity" in q and "perplexity" in ref and "vs_reference" not in q:
            q["vs_reference"] = relative_difference(q["perplexity"], ref["perplexity"])
        rec.values["quality"] = q


def is_demo_model(model: str | Path | None) -> bool:
    from bitexport.cli import DEMO_MODEL

    return model is not None and Path(model).resolve() == DEMO_MODEL.resolve()


def _score(args: list[str], progress: Callable[[str], None], key: str) -> dict:
    from bitexport.bench import proc

    rc, result, err, _, _ = proc.worker(args, proc.MEASURE_TIMEOUT_S)
    if rc != 0:
        result = {"error": proc.child_error(err, rc)}
        progress(f"  quality {key}: {result['error']}")
    else:
        progress(f"  quality {key}: perplexity {result['perplexity']:.4f} ({result['quality_s']:.0f} s)")
    return result


def suite_quality(records: list, opts, model_path: Path, cfg, work: Path, progress: Callable[[str], None],
                  lc=None) -> dict | None:
    """The benchmark's quality step: every ok variant scored in a worker process of its own on the
    same tokens, llama.cpp's through its own llama-perplexity (`llamacpp_quality`); results (and
    the difference from the reference) go into the records. Runs when opts.quality is set, or
    when it is None and MODEL is the demo model."""
    wanted = opts.quality if opts.quality is not None else is_demo_model(opts.model)
    if not wanted:
        return None
    window = opts.prompt_len + opts.new_tokens  # the exports' KV length
    text = None
    if is_demo_model(opts.model):
        tokens, text = demo_validation_text(Path(model_path) / "tokenizer.json", max_tokens=opts.quality_tokens)
        chars = len(text)
        what = f"the demo model's validation split (first {len(tokens)} tokens, {chars} characters)"
    else:
        tokens, chars = random_tokens(cfg.vocab_size, opts.quality_tokens, opts.seed), None
        what = f"{len(tokens)} random token ids (seed {opts.seed}): no text fits a random-weight model"
    path = work / "quality-tokens.json"
    path.write_text(json.dumps(tokens))
    progress(f"quality: teacher-forced perplexity on {what}, windows of {window}")
    results: dict[str, dict] = {}
    for rec in records:
        v = rec.variant
        if rec.status != "ok" or v.kind == "llamacpp":
            continue
        args = ["quality", "--tokens", str(path), "--window", str(window), "--threads", str(opts.threads)]
        args += ["--model", str(model_path)] if v.kind == "reference" else ["--bundle", rec.bundle, "--artifact", str(rec.artifact)]
        results[v.key] = _score(args, progress, v.key)
        if "perplexity" in results[v.key]:
            results[v.key]["characters"] = chars
    info = {"text": what, "tokens": len(tokens), "characters": chars, "window": window}
    llama = [r for r in records if r.variant.kind == "llamacpp" and r.status == "ok"]
    if llama:
        info["llama_cpp"] = llamacpp_quality(llama, results, lc, text, model_path, cfg, opts, work, window, progress)
    attach(records, results)
    return info


def llamacpp_quality(recs: list, results: dict, lc, text: str | None, model_path: Path, cfg, opts, work: Path,
                     window: int, progress: Callable[[str], None]) -> dict:
    """llama.cpp's TQ2_0/TQ1_0 through its own llama-perplexity on the scored text, and the PyTorch
    reference on the same token ids under the same protocol (bench/llamacpp/perplexity.py): each
    GGUF first gets the model's own tokenizer (bench/llamacpp/vocab.py), and the ids llama.cpp cuts
    the text into must equal ours, else nothing is compared."""
    from tokenizers import Tokenizer

    from bitexport.bench import llamacpp
    from bitexport.bench.llamacpp import perplexity as lp
    from bitexport.bench.llamacpp.vocab import retokenize
    from bitexport.errors import BitexportError

    def skip(reason: str) -> dict:
        for rec in recs:
            results[rec.variant.key] = {"error": reason}
        progress(f"  quality llama.cpp: not measured: {reason}")
        return {"status": "not measured", "reason": reason}

    if text is None:
        return skip("llama-perplexity scores text, and a random-weight model has no text (use the demo model)")
    if lc is None:
        return skip("llama.cpp is not built")
    protocol = f"llama-perplexity: windows of {window}, the second half of each scored"
    info: dict = {"protocol": protocol}
    if cfg.hidden_act != "silu":
        info["note"] = (f"llama.cpp {llamacpp.VERSION}'s BitNet graph gates its FFN with SiLU whatever the model says; "
                        f"this model uses {cfg.hidden_act}, so llama.cpp computes another network and its "
                        "perplexity shows what users of llama.cpp get, not a kernel's rounding")
    text_file = work / "quality-text.txt"
    text_file.write_text(text)
    ours = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json")).encode(text).ids
    ref = None
    for rec in recs:
        key, fmt = rec.variant.key, rec.variant.weights
        try:
            gguf = retokenize(lc.source / "gguf-py", Path(rec.gguf), work / f"model-{fmt}-vocab.gguf",
                              Path(model_path) / "tokenizer.json", (cfg.eos_token_ids or (None,))[0])
            ids = lp.tokenize(lc, gguf, text_file)
            if ids != ours:
                first = next((i for i, (a, b) in enumerate(zip(ids, ours)) if a != b), min(len(ids), len(ours)))
                raise BitexportError(f"llama.cpp's tokenizer cut the text into other ids (first difference at {first} "
                                     f"of {len(ours)}): nothing to compare")
            if ref is None:
                ids_file = work / "quality-llamacpp-tokens.json"
                ids_file.write_text(json.dumps(ids))
                ref = _score(["quality", "--tokens", str(ids_file), "--window", str(window), "--threads",
                              str(opts.threads), "--model", str(model_path), "--score-from", str(window // 2),
                              "--full-windows"], progress, "reference (llama-perplexity protocol)")
                info["reference"] = ref
            q = lp.perplexity(lc, gguf, text_file, window, opts.threads)
        except BitexportError as e:
            results[key] = {"error": str(e).splitlines()[0]}
            progress(f"  quality {key}: {results[key]['error']}")
            continue
        q.update(protocol=protocol, characters=len(text), tokens_identical=True)
        if "perplexity" in ref and ref.get("tokens_scored") == q["tokens_scored"]:
            q["reference_perplexity"] = ref["perplexity"]
            q["vs_reference"] = relative_difference(q["perplexity"], ref["perplexity"])
        results[key] = q
        progress(f"  quality {key}: llama-perplexity {q['perplexity']:.4f} (reference, same protocol: "
                 f"{ref.get('perplexity', float('nan')):.4f})")
    return info


__all__ = ["Perplexity", "attach", "demo_validation_text", "llamacpp_quality", "executorch_step", "onnx_step", "perplexity",
           "random_tokens", "reference_logits", "relative_difference", "stepwise", "suite_quality", "windows"]
