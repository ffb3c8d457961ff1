"""The generation loop every runner shares, with the timings every runner reports: prefill the
prompt in one call, then one token a call; the next token is picked by runtime/sampling.py
(greedy by default) and handed to `on_token` as soon as it is known (streaming)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from bitexport.model.decoder import BitNetDecoder
from bitexport.runtime.sampling import GREEDY, Sampler, SamplingConfig

# runs one forward call on `tokens` placed at position `pos`; returns the last position's logits
StepFn = Callable[[list[int], int], "np.ndarray | torch.Tensor"]
# called with each new token as soon as it is picked (the CLI prints text from it)
TokenCallback = Callable[[int], None]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # the first new token comes out of prefill; decode covers the steps after it
        steps = max(self.new_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class Generation:
    tokens: list[int]
    stats: GenerationStats = field(default_factory=GenerationStats)


def timed_generate(
    step: StepFn,
    prompt: list[int],
    max_new_tokens: int,
    max_seq_len: int,
    stop_ids: tuple[int, ...] = (),
    sampling: SamplingConfig = GREEDY,
    on_token: TokenCallback | None = None,
) -> Generation:
    """The loop every runner shares: prefill the prompt in one call, then decode one token a step;
    stop after a stop token (it is kept as the last token) or at the cache end. The time spent in
    `on_token` (printing) is not counted as the model's."""
    if not prompt:
        raise ValueError("the prompt is empty")
    budget = min(max_new_tokens, max_seq_len - len(prompt))
    stats = GenerationStats(prompt_tokens=len(prompt))
    out: list[int] = []
    if budget <= 0:
        return Generation(out, stats)
    sampler = Sampler(sampling)
    outside = 0.0

    def emit(token: int) -> None:
        nonlocal outside
        out.append(token)
        if on_token is not None:
            t = time.perf_counter()
            on_token(token)
            outside += time.perf_counter() - t

    t0 = time.perf_counter()
    token = sampler.pick(step(list(prompt), 0))
    stats.prefill_s = time.perf_counter() - t0
    emit(token)
    outside = 0.0
    t0 = time.perf_counter()
    pos = len(prompt)
    while len(out) < budget and token not in stop_ids:
        token = sampler.pick(step([token], pos))
        emit(token)
        pos += 1
    stats.decode_s = time.perf_counter() - t0 - outside
    stats.new_tokens = len(out)
    return Generation(out, stats)


@torch.no_grad()
def generate_on(
    model: BitNetDecoder,
    prompt: list[int],
    max_new_tokens: int,
    stop_ids: tuple[int, ...] = (),
    sampling: SamplingConfig = GREEDY,
    on_token: TokenCallback | None = None,
) -> Generation:
    """Generation on a decoder module (the reference, or a lowered copy of it)."""

    def step(tokens: list[int], pos: int) -> torch.Tensor:
        logits = model(torch.tensor([tokens]), torch.tensor([pos]))
        return logits.reshape(-1, logits.shape[-1])[-1]

    model.reset_cache()
    return timed_generate(step, prompt, max_new_tokens, model.max_seq_len, stop_ids, sampling, on_token)


def greedy_generate(model: BitNetDecoder, prompt: list[int], max_new_tokens: int,
                    eos_ids: tuple[int, ...] = ()) -> Generation:
    """Greedy generation on a decoder module (tests, training samples, verify's reference)."""
    return generate_on(model, prompt, max_new_tokens, eos_ids)


def common_prefix(tokens: list[int], reference: list[int]) -> int:
    """How many leading tokens two generations share."""
    n = 0
    for a, b in zip(tokens, reference):
        if a != b:
            break
        n += 1
    return n


def agreement(tokens: list[int] | None, reference: list[int] | None) -> dict | None:
    """A generation's greedy agreement with the reference's (None where either is missing)."""
    if tokens is None or reference is None:
        return None
    return {"common_prefix": common_prefix(tokens, reference), "of": len(reference), "identical": tokens == reference}
