"""Greedy generation on the reference decoder, with the timings every runner reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


@torch.no_grad()
def greedy_generate(
    model: BitNetDecoder,
    prompt: list[int],
    max_new_tokens: int,
    eos_ids: tuple[int, ...] = (),
) -> Generation:
    """Prefill the prompt in one call, then decode one token a step; stop at EOS or the cache end."""
    if not prompt:
        raise ValueError("the prompt is empty")
    budget = min(max_new_tokens, model.max_seq_len - len(prompt))
    stats = GenerationStats(prompt_tokens=len(prompt))
    out: list[int] = []
    if budget <= 0:
        return Generation(out, stats)
    model.reset_cache()
    t0 = time.perf_counter()
    logits = model(torch.tensor([prompt]), torch.tensor([0]))
    token = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
    stats.prefill_s = time.perf_counter() - t0
    out.append(token)
    t0 = time.perf_counter()
    pos = len(prompt)
    while len(out) < budget and token not in eos_ids:
        logits = model(torch.tensor([[token]]), torch.tensor([pos]))
        token = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
        out.append(token)
        pos += 1
    stats.decode_s = time.perf_counter() - t0
    stats.new_tokens = len(out)
    return Generation(out, stats)
