"""transformers' `model_type: "bitnet"` checkpoints (BitNetForCausalLM, microsoft/bitnet-b1.58-2B-4T).

Scale conventions, as transformers' integrations/bitnet.py applies them:
- linear_class "bitlinear": y = (xq . W) / (s * weight_scale), so W_eff = codes / weight_scale.
- linear_class "autobitlinear", offline: y = (x_deq . W) * weight_scale, so W_eff = codes * weight_scale.
- autobitlinear, online: full-precision weights, absmean-ternarized on the fly (here: at load).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bitexport.model.config import ModelConfig
from bitexport.errors import InputError
from bitexport.formats.hf_packing import unpack_rows
from bitexport.formats.checks import positive_scale, ternarize_shadow
from bitexport.formats.common import LinearReader, positive_number, LoadedModel, StoredFormat, build_decoder, llama_shaped_config, record
from bitexport.formats.folder import ModelFolder, TensorTable, read_tensors, require_tokenizer

LINEAR_CLASSES = ("bitlinear", "autobitlinear")
MODES = ("offline", "online")


@dataclass(frozen=True)
class BitnetQuant:
    """config.json's `quantization_config` for `quant_method: bitnet` (transformers' BitNetQuantConfig)."""

    linear_class: str = "bitlinear"
    mode: str = "offline"
    use_rms_norm: bool = False
    rms_norm_eps: float = 1e-6  # BitNetQuantConfig's default; the model's rms_norm_eps is not used
    modules_to_not_convert: tuple[str, ...] | None = None


def quant_settings(raw: dict, src: Path) -> BitnetQuant:
    q = raw.get("quantization_config") or {}
    if not isinstance(q, dict):
        raise InputError(f"{src}/config.json: quantization_config must be an object; fix config.json")
    if q.get("quant_method", "bitnet") != "bitnet":
        raise InputError(f"{src}: quantization_config.quant_method is {q.get('quant_method')!r}, expected 'bitnet'")
    linear_class = q.get("linear_class", "bitlinear")
    mode = q.get("quantization_mode", "offline")
    if linear_class not in LINEAR_CLASSES:
        raise InputError(f"{src}: linear_class {linear_class!r} is unknown; expected one of {LINEAR_CLASSES}")
    if mode not in MODES:
        raise InputError(f"{src}: quantization_mode {mode!r} is unknown; expected one of {MODES}")
    skip = q.get("modules_to_not_convert")
    if skip is not None and not (isinstance(skip, list) and all(isinstance(m, str) for m in skip)):
        raise InputError(f"{src}/config.json: quantization_config.modules_to_not_convert must be a list of names; fix config.json")
    eps = q.get("rms_norm_eps")
    return BitnetQuant(
        linear_class=linear_class,
        mode=mode,
        use_rms_norm=bool(q.get("use_rms_norm", False)),
        rms_norm_eps=positive_number(1e-6 if eps is None else eps, "quantization_config.rms_norm_eps"),
        modules_to_not_convert=None if skip is None else tuple(skip),
    )


def parse_config(folder: ModelFolder) -> tuple[ModelConfig, str, str]:
    raw, src = folder.config, folder.path
    q = quant_settings(raw, src)
    act = raw.get("hidden_act", "relu2")
    if act not in ("relu2", "silu"):
        raise InputError(f"{src}: hidden_act {act!r} is not supported; bitexport handles relu2 and silu")
    if raw.get("attention_bias"):
        raise InputError(f"{src}: attention_bias=true is not supported; BitNet linears have no bias")
    cfg = llama_shaped_config(
        raw, src, act=act, rope_default=500000.0, eps_default=1e-5, attn_sub_norm=True, ffn_sub_norm=True,
        linear_norm=q.use_rms_norm, linear_norm_eps=q.rms_norm_eps,
    )
    return cfg, q.linear_class, q.mode


def linear_reader(
    folder: ModelFolder, table: TensorTable, stored: dict[str, StoredFormat], linear_class: str, mode: str
) -> LinearReader:
    """Reads one ternary linear of a `quant_method: bitnet` checkpoint (any architecture): packed
    uint8 codes or dense ternary values with `weight_scale` in `linear_class`'s convention, or
    (mode "online") full-precision weights, absmean-ternarized here."""

    def read_linear(prefix: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        out, k = shape
        if mode == "online":
            w = table.take(f"{prefix}.weight", shape)
            record(stored, "ternary", f"{_dtype(w)} (online ternarized)", w, out * k)
            return ternarize_shadow(table, f"{prefix}.weight", w)
        w = table.take(f"{prefix}.weight")
        ws = table.take(f"{prefix}.weight_scale").float().reshape(-1)
        if ws.numel() != 1:
            raise InputError(f"{folder.path}: {prefix}.weight_scale must hold one value; got {ws.numel()}")
        positive_scale(table, f"{prefix}.weight_scale", ws)
        if w.dtype == torch.uint8:
            want = (-(-out // 4), k)
            if tuple(w.shape) != want:
                raise InputError(
                    f"{folder.path}: tensor '{prefix}.weight' has shape {tuple(w.shape)} but config.json implies "
                    f"{want} (packed 4 rows a byte); fix config.json or use the weights it belongs to"
                )
            try:
                codes = unpack_rows(w, out)
            except ValueError as e:
                raise InputError(f"{folder.path}: tensor '{prefix}.weight': {e}; the file is corrupt") from None
            record(stored, "ternary", "uint8 packed 2-bit", w, out * k)
        else:
            table.take(f"{prefix}.weight", shape)
            codes = w.float()
            if not bool(((codes == -1) | (codes == 0) | (codes == 1)).all()):
                raise InputError(f"{folder.path}: {prefix}.weight is not ternary though quantization_mode is offline")
            codes = codes.to(torch.int8)
            record(stored, "ternary", f"{_dtype(w)} ternary", w, out * k)
        record(stored, "weight_scale", str(_dtype(ws)), table.tensors[f"{prefix}.weight_scale"], 1)
        scale = (1.0 / ws) if linear_class == "bitlinear" else ws
        return codes, scale.reshape(1)

    return read_linear


def load(folder: ModelFolder, max_seq_len: int, ternarize: bool = False) -> LoadedModel:
    cfg, linear_class, mode = parse_config(folder)
    if ternarize:  # full-precision weights, absmean-ternarized here (what online mode does)
        mode = "online"
    tokenizer = require_tokenizer(folder)
    table = TensorTable(read_tensors(folder), folder.path)
    stored: dict[str, StoredFormat] = {}
    read_linear = linear_reader(folder, table, stored, linear_class, mode)

    model = build_decoder(cfg, table, read_linear, stored, max_seq_len)
    return LoadedModel(
        name=folder.name,
        source_format="hf-bitnet",
        config=cfg,
        model=model,
        tokenizer_path=tokenizer,
        source_path=folder.path,
        stored=stored,
        details={"linear_class": linear_class, "quantization_mode": mode},
    )


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")
