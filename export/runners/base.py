"""What every runner gives: greedy tokens and prefill/decode timings."""

from __future__ import annotations

from typing import Protocol

from bitexport.model.generate import Generation, GenerationStats


class Runner(Protocol):
    name: str  # what runs: "pytorch-reference", "executorch", "onnxruntime-genai", ...

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        """Greedy decoding: the prompt in one prefill, then one token a step until EOS or the limit."""


__all__ = ["Generation", "GenerationStats", "Runner"]
