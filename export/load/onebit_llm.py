"""1bitLLM-style checkpoints (`architectures: ["BitnetForCausalLM"]`, `model_type: "llama"`).

Llama tensors in full precision (fp16 shadow weights); every q/k/v/o/gate/up/down linear is a
BitLinear, ternarized with absmean at load exactly as the model ternarizes on the fly. No
sub-norms; SiLU gate; separate output head unless tie_word_embeddings.
"""

from __future__ import annotations

import torch

from bitexport.config import ModelConfig
from bitexport.errors import InputError
from bitexport.load.common import LoadedModel, StoredFormat, build_decoder, cfg_int, eos_ids, record, rope_theta
from bitexport.load.folder import ModelFolder, TensorTable, read_tensors, require_tokenizer
from bitexport.model.bitlinear import absmean_ternarize

ARCHITECTURE = "BitnetForCausalLM"


def parse_config(folder: ModelFolder) -> ModelConfig:
    raw, src = folder.config, folder.path
    act = raw.get("hidden_act", "silu")
    if act not in ("relu2", "silu"):
        raise InputError(f"{src}: hidden_act {act!r} is not supported; bitexport handles relu2 and silu")
    if raw.get("weight_bits", 1) != 1 or raw.get("input_bits", 8) != 8:
        raise InputError(f"{src}: only weight_bits=1 (ternary) and input_bits=8 are supported")
    heads = cfg_int(raw, "num_attention_heads", src)
    hidden = cfg_int(raw, "hidden_size", src)
    try:
        return ModelConfig(
            vocab_size=cfg_int(raw, "vocab_size", src),
            hidden_size=hidden,
            intermediate_size=cfg_int(raw, "intermediate_size", src),
            num_layers=cfg_int(raw, "num_hidden_layers", src),
            num_heads=heads,
            num_kv_heads=cfg_int(raw, "num_key_value_heads", src, heads),
            head_dim=raw.get("head_dim") or hidden // heads,
            hidden_act=act,
            rope_theta=rope_theta(raw, 10000.0),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            attn_sub_norm=False,
            ffn_sub_norm=False,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids(raw),
        )
    except ValueError as e:
        raise InputError(f"{src}/config.json: {e}; fix config.json") from None


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
