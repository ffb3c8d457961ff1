"""Tiny look-alikes of the published Llama-family BitNet checkpoints, and transformers'
`LlamaForCausalLM` (with its BitNet quantizer, through from_pretrained) as their reference.

Each config.json below carries the published model's fields (written from the models' published
config.json: Falcon3-1B-Instruct-1.58bit, Falcon-E-1B-Base, Llama3-8B-1.58-100B-tokens) with
these changes only:
- sizes tiny (hidden 64, 2 layers, intermediate 128 so that every ONNX K block holds a whole row);
  the head counts keep each model's grouping (GQA), and the Falcon3 look-alike keeps a head_dim
  that is not hidden / heads (32 x 4 heads = 128 != 64), the shape trait of Falcon3's head_dim 256;
- vocab and token ids those of the tiny test tokenizer (320 tokens, <s> = 0, </s> = 1);
- Llama3's rope scaling keeps its type and factors with its context lengths scaled down by the same
  ratio (original 8192 -> 32, max 131072 -> 512): at 8192 a tiny test's positions (< 100) would
  barely feel the scaling, at 32 they do, so a loader ignoring it fails the parity test.
Weights are random (tiny.random_decoder; an untied head scaled to 0.1), saved as transformers saves them: bf16, packed uint8
codes + weight_scale in each model's linear_class convention, the use_rms_norm weights as
`<linear>.rms_norm.weight`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from bitexport.formats.save_hf import save_llama_bitnet
from bitexport.formats.tiny import random_decoder, tiny_tokenizer
from bitexport.model.config import ModelConfig
from bitexport.model.rope import Llama3Rope

_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "mlp_bias": False,
    "model_type": "llama",
    "pretraining_tp": 1,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
}

MIRRORS: dict[str, dict] = {
    # tiiuae/Falcon3-1B-Instruct-1.58bit: bitlinear (codes / scale), untied head kept in bf16,
    # head_dim 256 (here 32), rope_theta 1000042, rms_norm_eps 1e-6, 8 heads / 4 KV heads
    "falcon3": {
        **_LLAMA,
        "head_dim": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000042,
        "tie_word_embeddings": False,
        "transformers_version": "4.46.1",
        "quantization_config": {"modules_to_not_convert": ["lm_head"], "quant_method": "bitnet"},
    },
    # tiiuae/Falcon-E-1B-Base: autobitlinear (codes * scale), offline packed, use_rms_norm, tied
    # embeddings, 32k vocab (here 320)
    "falcon-e": {
        **_LLAMA,
        "head_dim": 16,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "transformers_version": "4.52.0",
        "quantization_config": {
            "linear_class": "autobitlinear",
            "quant_method": "bitnet",
            "quantization_mode": "offline",
            "rms_norm_eps": 1e-05,
            "use_rms_norm": True,
        },
    },
    # HF1BitLLM/Llama3-8B-1.58-100B-tokens: bitlinear, llama3 rope scaling, untied head, GQA 32/8
    "llama3-8b": {
        **_LLAMA,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 32,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "transformers_version": "4.44.0.dev0",
        "quantization_config": {"modules_to_not_convert": None, "quant_method": "bitnet"},
    },
}


def model_config(raw: dict) -> ModelConfig:
    """The architecture `raw` describes, written out independently of bitexport's loader."""
    q = raw["quantization_config"]
    rs = raw.get("rope_scaling")
    heads = raw["num_attention_heads"]
    return ModelConfig(
        vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"], num_heads=heads, num_kv_heads=raw["num_key_value_heads"],
        head_dim=raw.get("head_dim") or raw["hidden_size"] // heads, hidden_act="silu",
        rope_theta=float(raw["rope_theta"]), rms_norm_eps=raw["rms_norm_eps"], attn_sub_norm=False,
        ffn_sub_norm=False, tie_word_embeddings=raw["tie_word_embeddings"],
        max_position_embeddings=raw["max_position_embeddings"], bos_token_id=0, eos_token_ids=(1,),
        linear_norm=bool(q.get("use_rms_norm")), linear_norm_eps=q.get("rms_norm_eps", 1e-6),
        rope_scaling=None if rs is None else Llama3Rope(**{k: v for k, v in rs.items() if k != "rope_type"}),
    )


def write_mirror(folder: Path, name: str, seed: int = 1, **edits) -> Path:
    """The tiny look-alike `name` in `folder`; `edits` overwrite config.json fields."""
    raw = copy.deepcopy(MIRRORS[name])
    raw.update(edits)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    assert tok.get_vocab_size() == raw["vocab_size"]
    tok.save(str(folder / "tokenizer.json"))
    mode = raw["quantization_config"].get("quantization_mode", "offline")
    model = random_decoder(model_config(raw), seed, trainable=mode == "online")
    if model.lm_head is not None:
        # a unit-Gaussian head gives logits of tens and astronomic perplexities, which verify's
        # relative perplexity bound cannot judge; 0.1 keeps them O(1), as a trained head's
        with torch.no_grad():
            model.lm_head.weight.mul_(0.1)
    return save_llama_bitnet(model, folder, folder / "tokenizer.json", raw, torch.bfloat16)


def load_transformers(folder):
    """transformers' LlamaForCausalLM from the folder, its BitNet quantizer swapping the linears
    (from_pretrained: the real loading path), in float32, eager."""
    import transformers

    with torch._dynamo.config.patch(disable=True):
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    # transformers 5.24 leaves AutoBitLinear's unpacked weights in the checkpoint's bf16 despite
    # dtype=float32 (and F.linear then refuses fp32 inputs): they hold -1/0/+1, so float() is exact
    with torch.no_grad():
        for module in model.modules():
            w = getattr(module, "weight", None)
            if isinstance(w, torch.Tensor) and w.dtype == torch.bfloat16:
                w.data = w.data.float()
    model.eval()
    return model

