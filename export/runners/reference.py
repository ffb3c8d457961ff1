"""The PyTorch reference decoder as a Runner."""

from __future__ import annotations

import torch

from bitexport.load import LoadedModel
from bitexport.model.generate import Generation, greedy_generate


class ReferenceRunner:
    name = "pytorch-reference"

    def __init__(self, loaded: LoadedModel, threads: int | None = None) -> None:
        self.loaded = loaded
        if threads:
            torch.set_num_threads(threads)
        # one throw-away step so the first timed prefill does not pay PyTorch's lazy start-up
        with torch.no_grad():
            loaded.model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
        loaded.model.reset_cache()

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        return greedy_generate(self.loaded.model, prompt_ids, max_new_tokens, self.loaded.config.eos_token_ids)
