"""What every runner gives: generated tokens (greedy, or sampled through runtime/sampling.py),
streamed to a callback as they come, and prefill/decode timings, on a thread count; and what
some runners also give cheaply: the logits behind each token (`LogitsRunner`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from bitexport.runtime.generate import Generation, GenerationStats, TokenCallback
from bitexport.runtime.sampling import GREEDY, SamplingConfig


class Runner(Protocol):
    name: str  # what runs: "pytorch-reference", "executorch", "onnxruntime-genai", ...
    max_seq_len: int  # positions the KV cache holds: prompt + new tokens stay within it

    stop_ids: tuple[int, ...]  # every token that ends a generation (kept as its last token)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig = GREEDY,
                 on_token: TokenCallback | None = None) -> Generation:
        """The prompt in one prefill, then one token a step until a stop token or the limit; each
        token goes to `on_token` as soon as it is picked."""

    def set_threads(self, n: int) -> None:
        """Use `n` CPU threads from the next call on."""


@runtime_checkable
class LogitsRunner(Protocol):
    """A runner that can show its logits (verify's logit deviation and perplexity need them)."""

    def next_token_logits(self, prompt_ids: list[int], continuation: list[int]) -> np.ndarray:
        """float32 [len(continuation) + 1, V]: row i holds the logits after prompt_ids +
        continuation[:i], i.e. the scores of the token that follows (teacher-forced)."""


def check_fits(n_tokens: int, max_seq_len: int, what: str) -> None:
    """Refuse a sequence longer than the KV cache with one line naming the fix (every runner)."""
    from bitexport.errors import InputError

    if n_tokens >= max_seq_len:
        raise InputError(
            f"the prompt has {n_tokens} tokens; {what} holds {max_seq_len} positions (prompt + new tokens): "
            "shorten the prompt or export with a larger --max-seq-len"
        )


__all__ = ["GREEDY", "Generation", "GenerationStats", "LogitsRunner", "Runner", "SamplingConfig", "check_fits"]
