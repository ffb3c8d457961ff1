"""transformers' BitNetForCausalLM as an independent reference (loaded from the same folder)."""

from __future__ import annotations

import torch


def load_hf(folder):
    import transformers

    # transformers wraps its BitLinear helpers in torch.compile; eager is what we compare with,
    # and compiling would cost minutes on CPU.
    with torch._dynamo.config.patch(disable=True):
        model = transformers.BitNetForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    return model


@torch.no_grad()
def hf_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch._dynamo.config.patch(disable=True):
        return model(tokens).logits


@torch.no_grad()
def hf_greedy(model, prompt: list[int], steps: int) -> list[int]:
    with torch._dynamo.config.patch(disable=True):
        ids = torch.tensor([prompt])
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
            pad_token_id=0, eos_token_id=None,
        )
    return out[0, len(prompt):].tolist()
