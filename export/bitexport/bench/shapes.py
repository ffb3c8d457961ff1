"""Model shapes the benchmarks run on, built in memory with random ternary weights.

No checkpoint is needed (none can be downloaded here): `synthetic_model(shape)` gives a LoadedModel
of the named shape that every target can export and the reference can run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bitexport.model.config import ModelConfig
from bitexport.formats import LoadedModel
from bitexport.model.decoder import BitNetDecoder
from bitexport.formats.tiny import tiny_config, tiny_tokenizer

SHAPES: dict[str, ModelConfig] = {
    # 1bitLLM/bitnet_b1_58-large (728.8M parameters), the shape of NOTES.md's llama.cpp table
    "large": ModelConfig(
        vocab_size=32002, hidden_size=1536, intermediate_size=4096, num_layers=24, num_heads=16,
        num_kv_heads=16, head_dim=96, hidden_act="silu", rope_theta=10000.0, rms_norm_eps=1e-5,
        attn_sub_norm=False, ffn_sub_norm=False, tie_word_embeddings=True, max_position_embeddings=2048,
        bos_token_id=1, eos_token_ids=(2,),
    ),
    # microsoft/bitnet-b1.58-2B-4T
    "2b": ModelConfig(
        vocab_size=128256, hidden_size=2560, intermediate_size=6912, num_layers=30, num_heads=20,
        num_kv_heads=5, head_dim=128, hidden_act="relu2", rope_theta=500000.0, rms_norm_eps=1e-5,
        attn_sub_norm=True, ffn_sub_norm=True, tie_word_embeddings=True, max_position_embeddings=4096,
        bos_token_id=128000, eos_token_ids=(128001, 128009),
    ),
    "tiny": tiny_config("hf-bitnet"),
}


def synthetic_decoder(cfg: ModelConfig, max_seq_len: int = 512, seed: int = 0) -> BitNetDecoder:
    """Random weights scaled as bitexport.formats.tiny.random_decoder scales them (activations O(1))."""
    g = torch.Generator().manual_seed(seed)
    model = BitNetDecoder(cfg, max_seq_len=max_seq_len)
    with torch.no_grad():
        model.embed_tokens.weight.copy_(torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        if model.lm_head is not None:
            model.lm_head.weight.copy_(torch.randn(cfg.vocab_size, cfg.hidden_size, generator=g))
        for _, lin in model.bitlinears():
            lin.codes.copy_(torch.randint(-1, 2, lin.codes.shape, generator=g, dtype=torch.int8))
            lin.scale.fill_(float(0.5 + torch.rand(1, generator=g)) * 1.5 / lin.in_features**0.5)
    return model.eval()


def synthetic_model(shape: str, max_seq_len: int = 512, seed: int = 0) -> LoadedModel:
    """A LoadedModel of SHAPES[shape] with random ternary weights and no checkpoint on disk.

    Its tokenizer is the tiny built-in BPE (written to a temporary folder): benchmarks feed token
    ids, so the tokenizer only has to exist for the targets that copy it into a bundle.
    """
    if shape not in SHAPES:
        raise KeyError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    cfg = SHAPES[shape]
    folder = Path(tempfile.mkdtemp(prefix=f"bitexport-synthetic-{shape}-"))
    tok_path = folder / "tokenizer.json"
    tiny_tokenizer().save(str(tok_path))
    return LoadedModel(
        name=f"synthetic-{shape}",
        source_format="synthetic",
        config=cfg,
        model=synthetic_decoder(cfg, max_seq_len, seed),
        tokenizer_path=tok_path,
        source_path=folder,
        details={"weights": "random ternary (synthetic)"},
    )


__all__ = ["SHAPES", "synthetic_decoder", "synthetic_model"]
