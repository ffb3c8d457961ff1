"""Write a decoder as a transformers `bitnet` checkpoint (the format BitNetForCausalLM loads).

Used for the bundled demo model and for the tiny checkpoints of the tests. Writes offline,
packed uint8 weights with `weight_scale` in either linear_class convention, or online
full-precision shadow weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from bitexport.model.config import ModelConfig
from bitexport.formats.hf_packing import pack_rows
from bitexport.model.decoder import BitNetDecoder


def _llama_fields(cfg: ModelConfig) -> dict:
    """The Llama-family config.json fields both checkpoint formats share."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "hidden_act": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        # none for a model without EOS (the benchmark's random models must decode every token)
        "eos_token_id": (cfg.eos_token_ids[0] if len(cfg.eos_token_ids) == 1 else list(cfg.eos_token_ids)) or None,
    }


def hf_config(cfg: ModelConfig, linear_class: str = "bitlinear", mode: str = "offline", dtype: str = "float32") -> dict:
    """config.json of a transformers `BitNetForCausalLM` folder (`model_type: bitnet`)."""
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        **_llama_fields(cfg),
        "head_dim": cfg.head_dim,
        "attention_bias": False,
        "torch_dtype": dtype,
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": mode,
        },
    }


def onebitllm_config(cfg: ModelConfig, dtype: str = "float16") -> dict:
    """config.json of a 1bitLLM-style folder (`BitnetForCausalLM` on `model_type: llama`)."""
    return {
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        **_llama_fields(cfg),
        "input_bits": 8,
        "weight_bits": 1,
        "torch_dtype": dtype,
    }


def state_dict_hf(
    model: BitNetDecoder,
    linear_class: str = "bitlinear",
    mode: str = "offline",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """HF tensor names -> tensors. Online mode needs a model still holding shadow weights."""
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name.endswith((".codes", ".scale", ".weight")) and _is_bitlinear(model, name):
            continue
        if name == "lm_head.weight" or name.startswith("lm_head."):
            out[name] = t.to(dtype).contiguous()
        else:
            out[f"model.{name}"] = t.to(dtype).contiguous()
    for name, lin in model.bitlinears():
        key = f"model.{name}"
        if mode == "online":
            if lin.weight is None:
                raise ValueError("online mode needs the full-precision shadow weights; the model is frozen")
            out[f"{key}.weight"] = lin.weight.detach().to(dtype).contiguous()
            continue
        if lin.weight is not None:
            raise ValueError("freeze() the model before saving it in offline mode")
        out[f"{key}.weight"] = pack_rows(lin.codes)
        gamma = lin.scale.float().reshape(1)
        ws = 1.0 / gamma if linear_class == "bitlinear" else gamma
        out[f"{key}.weight_scale"] = ws.to(dtype)
    return out


def _is_bitlinear(model: BitNetDecoder, tensor_name: str) -> bool:
    module_name = tensor_name.rsplit(".", 1)[0]
    return module_name in dict(model.bitlinears())


def save_hf_bitnet(
    model: BitNetDecoder,
    folder: str | Path,
    tokenizer_json: str | Path,
    *,
    linear_class: str = "bitlinear",
    mode: str = "offline",
    dtype: torch.dtype = torch.float32,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = state_dict_hf(model, linear_class, mode, dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(model.config, linear_class, mode, str(dtype).removeprefix("torch."))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if Path(tokenizer_json).resolve() != (folder / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return folder


def save_llama_bitnet(
    model: BitNetDecoder,
    folder: str | Path,
    tokenizer_json: str | Path,
    config: dict,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write `model` as a Llama-family BitNet checkpoint (`LlamaForCausalLM` + quantization_config
    bitnet) under the given config.json, which must describe the model: its quantization_config
    picks the scale convention and mode; the input norms of use_rms_norm are written as
    `<linear>.rms_norm.weight`, where transformers' BitNet quantizer reads them."""
    q = config.get("quantization_config") or {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = state_dict_hf(model, q.get("linear_class", "bitlinear"), q.get("quantization_mode", "offline"), dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if Path(tokenizer_json).resolve() != (folder / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return folder
