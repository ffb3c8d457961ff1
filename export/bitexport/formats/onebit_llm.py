"""1bitLLM-style checkpoints (`architectures: ["BitnetForCausalLM"]`, `model_type: "llama"`).

Llama tensors in full precision (fp16 shadow weights); every q/k/v/o/gate/up/down linear is a
BitLinear, ternarized with absmean at load exactly as the model ternarizes on the fly. No
sub-norms; SiLU gate; separate output head unless tie_word_embeddings.
"""

from __future__ import annotations

import torch

from bitexport.model.config import ModelConfig
from bitexport.errors import InputError
from bitexport.formats.common import LoadedModel, StoredFormat, build_decoder, llama_shaped_config, record
from bitexport.formats.folder import ModelFolder, TensorTable, read_tensors, require_tokenizer
from bitexport.model.quant import absmean_ternarize

ARCHITECTURE = "BitnetForCausalLM"


def parse_config(folder: ModelFolder) -> ModelConfig:
    raw, src = folder.config, folder.path
    act = raw.get("hidden_act", "silu")
    if act not in ("relu2", "silu"):
        raise InputError(f"{src}: hidden_act {act!r} is not supported; bitexport handles relu2 and silu")
    if raw.get("weight_bits", 1) != 1 or raw.get("input_bits", 8) != 8:
        raise InputError(f"{src}: only weight_bits=1 (ternary) and input_bits=8 are supported")
    return llama_shaped_config(raw, src, act=act, rope_default=10000.0, eps_default=1e-6, sub_norms=False)


def load(folder: ModelFolder, max_seq_len: int) -> LoadedModel:
    cfg = parse_config(folder)
    tokenizer = require_tokenizer(folder)
    table = TensorTable(read_tensors(folder), folder.path)
    stored: dict[str, StoredFormat] = {}

    def read_linear(prefix: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = table.take(f"{prefix}.weight", shape)
        record(stored, "ternary", f"{str(w.dtype).removeprefix('torch.')} shadow (ternarized at load)", w, w.numel())
        return absmean_ternarize(w)

    model = build_decoder(cfg, table, read_linear, stored, max_seq_len)
    return LoadedModel(
        name=folder.name,
        source_format="1bitllm",
        config=cfg,
        model=model,
        tokenizer_path=tokenizer,
        source_path=folder.path,
        stored=stored,
    )
