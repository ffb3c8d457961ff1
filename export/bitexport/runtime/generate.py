"""Greedy generation on the reference decoder, with the timings every runner reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from bitexport.model.decoder import BitNetDecoder


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


def timed_greedy(
    step: Callable[[list[int], int], int],
    prompt: list[int],
    max_new_tokens: int,
    max_seq_len: int,
    eos_ids: tuple[int, ...] = (),
) -> Generation:
    """The loop every runner shares: prefill the prompt in one call, then decode one token a step;
    stop at EOS or the cache end. `step(tokens, pos)` runs one forward call on `tokens` placed at
    position `pos` and returns the argmax of the last position's logits."""
    if not prompt:
        raise ValueError("the prompt is empty")
    budget = min(max_new_tokens, max_seq_len - len(prompt))
    stats = GenerationStats(prompt_tokens=len(prompt))
    out: list[int] = []
    if budget <= 0:
        return Generation(out, stats)
    t0 = time.perf_counter()
    token = step(list(prompt), 0)
    stats.prefill_s = time.perf_counter() - t0
    out.append(token)
    t0 = time.perf_counter()
    pos = len(prompt)
    while len(out) < budget and token not in eos_ids:
        token = step([token], pos)
        out.append(token)
        pos += 1
    stats.decode_s = time.perf_counter() - t0
    stats.new_tokens = len(out)
    return Generation(out, stats)


@torch.no_grad()
def greedy_generate(
    model: BitNetDecoder,
    prompt: list[int],
    max_new_tokens: int,
    eos_ids: tuple[int, ...] = (),
) -> Generation:
    """Greedy generation on a decoder module (the reference, or a lowered copy of it)."""

    def step(tokens: list[int], pos: int) -> int:
        logits = model(torch.tensor([tokens]), torch.tensor([pos]))
        return int(logits.reshape(-1, logits.shape[-1])[-1].argmax())

    model.reset_cache()
    return timed_greedy(step, prompt, max_new_tokens, model.max_seq_len, eos_ids)


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
