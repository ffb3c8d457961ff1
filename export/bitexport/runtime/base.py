"""What every runner gives: greedy tokens and prefill/decode timings, on a thread count."""

from __future__ import annotations

from typing import Protocol

from bitexport.runtime.generate import Generation, GenerationStats


class Runner(Protocol):
    name: str  # what runs: "pytorch-reference", "executorch", "onnxruntime-genai", ...
    max_seq_len: int  # positions the KV cache holds: prompt + new tokens stay within it

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding: the prompt in one prefill, then one token a step until EOS or the limit."""

    def set_threads(self, n: int) -> None:
        """Use `n` CPU threads from the next call on."""


__all__ = ["Generation", "GenerationStats", "Runner"]
