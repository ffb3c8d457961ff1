"""The files onnxruntime-genai reads beside the model: genai_config.json and tokenizer_config.json.

genai opens a folder: genai_config.json names the decoder file, its input/output names and the
attention shape; `og.Tokenizer` reads tokenizer.json with a tokenizer_config.json beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitexport.model.config import ModelConfig
from bitexport.targets.onnx.decoder import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    PRESENT_KEY,
    PRESENT_VALUE,
)

# genai's decoder-only model class; "llama" is the type its model builder writes for Llama-shaped
# decoders, which BitNet is apart from the linears (that genai never looks inside).
GENAI_MODEL_TYPE = "llama"


def genai_config(cfg: ModelConfig, model_file: str, max_seq_len: int, stop_ids: tuple[int, ...] | None = None) -> dict:
    """`stop_ids`: every token that ends a generation (config.json's eos when None); genai's
    eos_token_id takes a list and stops at any of them."""
    eos = list(cfg.eos_token_ids if stop_ids is None else stop_ids)
    return {
        "model": {
            "bos_token_id": cfg.bos_token_id if cfg.bos_token_id is not None else (eos[0] if eos else 0),
            "context_length": max_seq_len,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": model_file,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {
                    "input_ids": INPUT_IDS,
                    "attention_mask": ATTENTION_MASK,
                    "past_key_names": PAST_KEY,
                    "past_value_names": PAST_VALUE,
                },
                "outputs": {
                    "logits": LOGITS,
                    "present_key_names": PRESENT_KEY,
                    "present_value_names": PRESENT_VALUE,
                },
                "num_attention_heads": cfg.num_heads,
                "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
            },
            "eos_token_id": eos[0] if len(eos) == 1 else eos,
            "pad_token_id": eos[0] if eos else 0,
            "type": GENAI_MODEL_TYPE,
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": max_seq_len,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            # GroupQueryAttention writes the new keys/values into a max_length cache in place (the
            # builder's choice for GQA): no per-step copy of the whole cache
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def tokenizer_config(tokenizer_json: Path, cfg: ModelConfig) -> dict:
    """A minimal tokenizer_config.json naming the special tokens (genai's tokenizer wants one)."""
    vocab = json.loads(tokenizer_json.read_text()).get("added_tokens", [])
    by_id = {t["id"]: t["content"] for t in vocab}
    out: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    if cfg.bos_token_id in by_id:
        out["bos_token"] = by_id[cfg.bos_token_id]
    if cfg.eos_token_ids and cfg.eos_token_ids[0] in by_id:
        out["eos_token"] = by_id[cfg.eos_token_ids[0]]
    out["model_max_length"] = cfg.max_position_embeddings
    return out


def write_genai_files(folder: Path, cfg: ModelConfig, model_file: str, max_seq_len: int, tokenizer_json: Path,
                      stop_ids: tuple[int, ...] | None = None) -> None:
    config = genai_config(cfg, model_file, max_seq_len, stop_ids)
    (folder / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    source_cfg = tokenizer_json.parent / "tokenizer_config.json"
    if source_cfg.is_file():
        (folder / "tokenizer_config.json").write_bytes(source_cfg.read_bytes())
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tokenizer_json, cfg), indent=2) + "\n")
