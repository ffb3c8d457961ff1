"""Llama-family BitNet checkpoints: transformers' `LlamaForCausalLM` with
`quantization_config.quant_method: "bitnet"` (HF1BitLLM/Llama3-8B-1.58-*, tiiuae/Falcon3-*-1.58bit,
tiiuae/Falcon-E-*; Falcon3 and Falcon-E are published as `model_type: llama`).

Read as transformers' BitNet quantizer reads them:
- every nn.Linear not matched by `modules_to_not_convert` becomes a BitLinear; when the list is
  absent, transformers keeps the output head (and tied weights) in full precision. bitexport needs
  all seven linears of every layer ternary and the head in float: any other split is refused by name.
- weights: packed uint8 codes + `weight_scale` in `linear_class`'s convention ("bitlinear":
  codes / scale, Llama3-8B-1.58 and Falcon3; "autobitlinear": codes * scale, Falcon-E), or
  full-precision weights absmean-ternarized at load (`quantization_mode: online`, or `--ternarize`);
  the same reader as model_type "bitnet" (hf_bitnet.linear_reader).
- `use_rms_norm: true` (Falcon-E): `<linear>.rms_norm.weight`, an RMSNorm on each BitLinear's
  input with `quantization_config.rms_norm_eps` (default 1e-6), not the model's rms_norm_eps.
- Llama: SiLU, config's `head_dim` (Falcon3: 256 with hidden 2048 / 8 heads), rope_theta (default
  10000) and `rope_scaling` "llama3" (others refused by name), rms_norm_eps default 1e-6, untied
  head unless tie_word_embeddings. No BitNet sub-norms: LlamaForCausalLM has none; where a checkpoint
  holds them anyway (attn_sub_norm/ffn_sub_norm, or 1bitLLM's inner_attn_ln/ffn_layernorm) they
  are applied, since they were trained with (transformers' Llama would drop them as unexpected keys).

`--ternarize` (LoadOptions.ternarize): a Llama checkpoint without codes (no quantization_config,
e.g. Falcon-E's "prequantized" revision) is read as online BitNet: every layer linear
absmean-ternarized at load, as transformers' online mode (AutoBitLinear's WeightQuant) does; input
norms (use_rms_norm) where the checkpoint holds `<linear>.rms_norm.weight`, with eps 1e-6
(BitNetQuantConfig's default: such a checkpoint does not say).
"""

from __future__ import annotations

import re
from dataclasses import replace

from bitexport.errors import InputError
from bitexport.formats.common import LoadedModel, StoredFormat, SubNormNames, build_decoder, llama_shaped_config
from bitexport.formats.folder import ModelFolder, TensorTable, read_tensors, require_tokenizer
from bitexport.formats.hf_bitnet import BitnetQuant, linear_reader, quant_settings
from bitexport.model.config import ATTENTION_LINEARS, MLP_LINEARS, ModelConfig

ARCHITECTURE = "LlamaForCausalLM"
# sub-norm names a Llama-shaped BitNet checkpoint may carry: BitNet b1.58-2B-4T's, then 1bitLLM's
SUB_NORM_NAMES = (SubNormNames(), SubNormNames(attn="self_attn.inner_attn_ln", ffn="mlp.ffn_layernorm"))


def is_llama(raw: dict) -> bool:
    return raw.get("model_type") == "llama" or ARCHITECTURE in (raw.get("architectures") or [])


def has_bitnet_quantization(raw: dict) -> bool:
    q = raw.get("quantization_config")
    return isinstance(q, dict) and q.get("quant_method") == "bitnet"


def _not_converted(module: str, patterns: tuple[str, ...]) -> bool:
    """Whether one of `patterns` keeps `module` in full precision, by transformers' rule: a pattern
    matches from the start up to a module boundary (also as a regex), or as a suffix."""
    for p in patterns:
        try:
            if re.match(rf"(?:{p})(?:(?<=\.)|(?=\.|$))", module):
                return True
        except re.error:
            pass
        if module.endswith(p):
            return True
    return False


def check_conversion(cfg: ModelConfig, q: BitnetQuant, src) -> None:
    """Refuse a modules_to_not_convert that keeps a layer linear in float or converts the head."""
    if q.modules_to_not_convert is None:
        return  # transformers' default: only the output head (and tied weights) stay in float
    skip = q.modules_to_not_convert
    kept = [
        f"model.layers.{i}.{kind}.{name}"
        for i in range(cfg.num_layers)
        for kind, names in (("self_attn", ATTENTION_LINEARS), ("mlp", MLP_LINEARS))
        for name in names
        if _not_converted(f"model.layers.{i}.{kind}.{name}", skip)
    ]
    if kept:
        raise InputError(
            f"{src}/config.json: quantization_config.modules_to_not_convert keeps {kept[0]!r}"
            f"{f' and {len(kept) - 1} more' if len(kept) > 1 else ''} in full precision; bitexport needs every "
            "layer linear ternary (use a checkpoint whose layer linears are all BitLinear)"
        )
    if not _not_converted("lm_head", skip):
        raise InputError(
            f"{src}/config.json: quantization_config.modules_to_not_convert does not name 'lm_head', so transformers "
            "would make the output head ternary; bitexport supports a full-precision head only (add 'lm_head' to the list)"
        )


def parse_config(folder: ModelFolder, ternarize: bool) -> tuple[ModelConfig, BitnetQuant]:
    raw, src = folder.config, folder.path
    if has_bitnet_quantization(raw):
        q = quant_settings(raw, src)
        if ternarize:
            q = replace(q, mode="online")
    elif ternarize:
        q = BitnetQuant(linear_class="autobitlinear", mode="online")
    else:
        raise InputError(
            f"{folder.path}: a Llama checkpoint without quantization_config.quant_method 'bitnet' (full-precision "
            "weights); if it was trained as BitNet (e.g. Falcon-E's prequantized revision) pass --ternarize to "
            "ternarize its linears at load"
        )
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise InputError(f"{src}: hidden_act {act!r} is not supported for a Llama checkpoint; bitexport handles silu")
    for key in ("attention_bias", "mlp_bias"):
        if raw.get(key):
            raise InputError(f"{src}: {key}=true is not supported; BitNet linears have no bias")
    cfg = llama_shaped_config(
        raw, src, act="silu", rope_default=10000.0, eps_default=1e-6, attn_sub_norm=False, ffn_sub_norm=False,
        linear_norm=q.use_rms_norm, linear_norm_eps=q.rms_norm_eps,
    )
    check_conversion(cfg, q, src)
    return cfg, q


def with_sub_norms(cfg: ModelConfig, table: TensorTable) -> tuple[ModelConfig, SubNormNames]:
    """Sub-norms where layer 0 holds their tensors (a later layer missing one is then a missing
    tensor, one holding an extra one an unused tensor: both refused by name)."""
    for names in SUB_NORM_NAMES:
        attn = f"model.layers.0.{names.attn}.weight" in table
        ffn = f"model.layers.0.{names.ffn}.weight" in table
        if attn or ffn:
            return replace(cfg, attn_sub_norm=attn, ffn_sub_norm=ffn), names
    return cfg, SUB_NORM_NAMES[0]


def with_linear_norms(cfg: ModelConfig, table: TensorTable) -> ModelConfig:
    """--ternarize on a checkpoint without quantization_config: use_rms_norm is unknown, so input
    norms are applied where layer 0's q_proj holds one, with BitNetQuantConfig's default eps."""
    if "model.layers.0.self_attn.q_proj.rms_norm.weight" in table:
        return replace(cfg, linear_norm=True, linear_norm_eps=BitnetQuant().rms_norm_eps)
    return cfg


def load(folder: ModelFolder, max_seq_len: int, ternarize: bool = False) -> LoadedModel:
    cfg, q = parse_config(folder, ternarize)
    tokenizer = require_tokenizer(folder)
    table = TensorTable(read_tensors(folder), folder.path)
    if ternarize and any(not t.is_floating_point() for n, t in table.tensors.items() if n.endswith("_proj.weight")):
        raise InputError(
            f"{folder.path}: its linears are already packed ternary codes; drop --ternarize (it is for full-precision weights)"
        )
    cfg, sub_norms = with_sub_norms(cfg, table)
    if ternarize and not has_bitnet_quantization(folder.config):
        cfg = with_linear_norms(cfg, table)
    stored: dict[str, StoredFormat] = {}
    read = linear_reader(folder, table, stored, q.linear_class, q.mode)
    model = build_decoder(cfg, table, read, stored, max_seq_len, sub_norms)
    details = {"linear_class": q.linear_class, "quantization_mode": q.mode, "use_rms_norm": q.use_rms_norm}
    if ternarize:
        details["ternarize"] = True
    return LoadedModel(
        name=folder.name,
        source_format="llama-bitnet",
        config=cfg,
        model=model,
        tokenizer_path=tokenizer,
        source_path=folder.path,
        stored=stored,
        details=details,
    )
