"""What a finished run leaves behind: the checkpoint, its measured quality, a text sample."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from bitexport.formats import load_model
from bitexport.model.decoder import BitNetDecoder
from bitexport.runtime.generate import greedy_generate
from bitexport.formats.save_hf import save_hf_bitnet
from bitexport.train.recipe import evaluate, ppl

# bf16 embeddings, norms and weight scales, as microsoft/bitnet-b1.58-2B-4T stores them
SAVE_DTYPE = torch.bfloat16
SAMPLE_THREADS = 4


def frozen_cpu_copy(model: BitNetDecoder) -> BitNetDecoder:
    """A float32 CPU copy whose BitLinears hold ternary codes (the inference form)."""
    m = copy.deepcopy(model).to("cpu").float()
    for _, lin in m.bitlinears():
        lin.freeze()
    return m.eval()


def save_ternary(model: BitNetDecoder, folder: Path, tokenizer_json: Path) -> Path:
    """The HF `bitnet` packed checkpoint (BitNetForCausalLM, linear_class bitlinear, offline)."""
    return save_hf_bitnet(frozen_cpu_copy(model), folder, tokenizer_json,
                          linear_class="bitlinear", mode="offline", dtype=SAVE_DTYPE)


def save_full_precision(model: BitNetDecoder, folder: Path, tokenizer_json: Path) -> Path:
    """Plain state dict + bitexport config: the comparison model is no ternary checkpoint, so
    no loader reads it; it is kept for inspection and further experiments."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", SAVE_DTYPE).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "bitexport_config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (folder / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    return folder


def evaluate_checkpoint(folder: Path, windows: torch.Tensor, device: torch.device, batch_size: int) -> dict:
    """Validation loss of the checkpoint as `load_model` reads it (float32 inference arithmetic)."""
    loaded = load_model(folder, max_seq_len=windows.shape[1] - 1)
    model = loaded.model.to(device)
    loss = evaluate(model, windows.to(device), batch_size)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return {"val_loss": round(loss, 4), "val_ppl": round(ppl(loss), 3), "folder_bytes": size}


def sample(model: BitNetDecoder, tokenizer: Tokenizer, prompt: str, max_new_tokens: int,
           eos_ids: tuple[int, ...]) -> dict:
    """Greedy continuation of `prompt` with the reference generator (model on the CPU)."""
    ids = tokenizer.encode(prompt).ids
    # Decoding one token at a time is hundreds of tiny CPU ops: many threads gain nothing, and
    # on a shared host (two runs side by side) all cores' worth of threads stalled the sample.
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, SAMPLE_THREADS))
    try:
        gen = greedy_generate(model, ids, max_new_tokens, eos_ids)
    finally:
        torch.set_num_threads(threads)
    return {"prompt": prompt, "tokens": gen.tokens, "text": tokenizer.decode(ids + gen.tokens)}
