"""Tiny random checkpoints of each supported format, built on the spot.

Tests build them in a temporary folder (no model can be downloaded here); `bitexport make-tiny`
gives users the same thing to try the pipeline on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bitexport.model.config import ModelConfig
from bitexport.model.decoder import BitNetDecoder
from bitexport.formats.save_hf import onebitllm_config, save_hf_bitnet

FORMATS = ("hf-bitnet", "1bitllm")

_CORPUS = """\
First Citizen: Before we proceed any further, hear me speak.
All: Speak, speak. You are all resolved rather to die than to famish?
The quick brown fox jumps over the lazy dog; the lazy dog sleeps in the sun.
To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer
the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.
Numbers 0 1 2 3 4 5 6 7 8 9 and marks . , ; : ! ? ' " ( ) - make every byte appear.
"""


def tiny_tokenizer(vocab_size: int = 320) -> Tokenizer:
    """A byte-level BPE with <s> (id 0) and </s> (id 1), trained on a built-in paragraph."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    return tok


def tiny_config(fmt: str = "hf-bitnet", vocab_size: int = 320, **overrides) -> ModelConfig:
    base = ModelConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        hidden_act="relu2" if fmt == "hf-bitnet" else "silu",
        rope_theta=500000.0 if fmt == "hf-bitnet" else 10000.0,
        rms_norm_eps=1e-5,
        attn_sub_norm=fmt == "hf-bitnet",
        ffn_sub_norm=fmt == "hf-bitnet",
        tie_word_embeddings=fmt == "hf-bitnet",
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_ids=(1,),
    )
    return replace(base, **overrides)


def random_decoder(cfg: ModelConfig, seed: int = 0, *, trainable: bool = False) -> BitNetDecoder:
    """Random weights scaled so activations stay O(1) and logits are well separated."""
    g = torch.Generator().manual_seed(seed)
    model = BitNetDecoder(cfg, max_seq_len=min(cfg.max_position_embeddings, 256), trainable=trainable)
    with torch.no_grad():
        # small embeddings let the layers, not the token itself, decide the next token: random
        # models otherwise just repeat their input, which makes greedy-token tests weak
        model.embed_tokens.weight.copy_(0.2 * torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        if model.lm_head is not None:
            model.lm_head.weight.copy_(torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g))
        for _, lin in model.bitlinears():
            fan_in = lin.in_features
            if trainable:
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / fan_in**0.5)
            else:
                codes = torch.randint(-1, 2, (lin.out_features, fan_in), generator=g, dtype=torch.int8)
                lin.codes.copy_(codes)
                lin.scale.fill_(float(0.5 + torch.rand(1, generator=g)) * 1.5 / fan_in**0.5)
    model.eval()
    return model


def make_tiny_checkpoint(
    folder: str | Path,
    fmt: str = "hf-bitnet",
    *,
    linear_class: str = "bitlinear",
    mode: str = "offline",
    seed: int = 1,
    **config_overrides,
) -> Path:
    """Write a random tiny checkpoint of `fmt` (with tokenizer.json) into `folder`."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    tok_path = folder / "tokenizer.json"
    tok.save(str(tok_path))
    cfg = tiny_config(fmt, vocab_size=tok.get_vocab_size(), **config_overrides)
    if fmt == "hf-bitnet":
        model = random_decoder(cfg, seed, trainable=(mode == "online"))
        return save_hf_bitnet(model, folder, tok_path, linear_class=linear_class, mode=mode)
    model = random_decoder(cfg, seed, trainable=True)
    _save_1bitllm(model, folder)
    return folder


# our decoder's sub-norm names -> 1bitLLM's (modeling_bitnet.py's inner_attn_ln / ffn_layernorm)
_ONEBIT_NAMES = {".self_attn.attn_sub_norm.": ".self_attn.inner_attn_ln.", ".mlp.ffn_sub_norm.": ".mlp.ffn_layernorm."}


def _save_1bitllm(model: BitNetDecoder, folder: Path) -> None:
    cfg = model.config
    tensors = {}
    for name, t in model.state_dict().items():
        key = name if name.startswith("lm_head.") else f"model.{name}"
        for ours, theirs in _ONEBIT_NAMES.items():
            key = key.replace(ours, theirs)
        tensors[key] = t.to(torch.float16).contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = onebitllm_config(cfg)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


__all__ = ["FORMATS", "make_tiny_checkpoint", "random_decoder", "tiny_config", "tiny_tokenizer"]
