"""GGUF files (llama.cpp's format) with ternary linears: architectures `bitnet` and `llama`.

Read with the `gguf` package (llama.cpp's own reader). What each architecture means is what
llama.cpp's graph for it computes (src/models/bitnet.cpp, llama.cpp):

- `bitnet` (llama.cpp's converter writes it for BitnetForCausalLM / BitNetForCausalLM): SiLU gate,
  the sub-norms `attn_sub_norm` (before attn_output) and `ffn_sub_norm` (before ffn_down), both
  required, the output head tied to token_embd. RoPE is NEOX-style (half split), as in HF
  checkpoints, so Q/K rows are stored unpermuted. Each linear may carry a per-tensor scale
  `blk.N.<linear>.scale` (shape [1]) that multiplies its output.
- `llama` with ternary linears (the converter's TQ output of a Llama-family BitNet checkpoint):
  SiLU, no sub-norms, `output.weight` when untied. llama.cpp's RoPE for `llama` rotates adjacent
  pairs, so its converter permutes the rows of attn_q/attn_k; they are permuted back here.

Ternary linears are TQ2_0 or TQ1_0 (gguf_blocks.py), or F32/F16/BF16 holding {-a, 0, a}. A TQ block
carries its own fp16 scale, BitNet one scale a tensor: every block holding a non-zero code must
carry the same scale (all-zero blocks carry 0 and say nothing), else the tensor is refused by
name. Embedding, head and norms may be any type gguf can dequantize (F16/F32/BF16, or a
llama-quantize type such as Q6_K: dequantized as llama.cpp reads it).

Every tensor must be consumed; an unknown one, an unknown architecture or metadata the decoder
cannot honour (rope scaling, partial rotary dimensions) is refused by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bitexport.errors import InputError
from bitexport.formats import gguf_blocks
from bitexport.formats.checks import positive_scale
from bitexport.formats.common import LoadedModel, StoredFormat, build_decoder, record
from bitexport.formats.folder import TensorTable
from bitexport.formats.gguf_tokenizer import tokenizer_folder
from bitexport.model.config import ModelConfig

ARCHITECTURES = ("bitnet", "llama")
SUFFIX = ".gguf"
DESCRIBED_BY = "the GGUF metadata"

# our (HF) names -> llama.cpp's, inside blk.N
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.attn_sub_norm.weight": "attn_sub_norm.weight",
    "mlp.ffn_sub_norm.weight": "ffn_sub_norm.weight",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
TERNARY_TYPES = ("TQ2_0", "TQ1_0", "F32", "F16", "BF16")


def gguf_name(name: str) -> str:
    """llama.cpp's name for one of our tensor (or linear-prefix) names; others pass through."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = _LAYER.fullmatch(name)
    if m:
        rest = m.group(2)
        for ours, theirs in _LAYER_NAMES.items():
            if rest == ours or rest.startswith(ours + "."):
                return f"blk.{m.group(1)}.{theirs}{rest[len(ours):]}"
    return name


class GGUFTable(TensorTable):
    """A TensorTable keyed by llama.cpp's names that build_decoder can ask with ours; messages and
    the unused-tensor refusal name the file's own tensors."""

    def __contains__(self, name: str) -> bool:
        return gguf_name(name) in self.tensors

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        return super().take(gguf_name(name), shape)


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    meta: dict
    tensors: dict  # name -> gguf ReaderTensor

    @property
    def architecture(self) -> str:
        return str(self.meta.get("general.architecture"))


def is_gguf(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() == SUFFIX:
        return True
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"


def open_gguf(path: Path) -> GGUFFile:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError, TypeError) as e:
        raise InputError(f"{path}: not a readable GGUF file ({e}); download or convert it again") from None
    meta = {}
    for key, field in reader.fields.items():
        # the tokenizer's vocabulary arrays are large and read by the tokenizer conversion
        if key.startswith("tokenizer.ggml.") and key not in _TOKENIZER_IDS:
            continue
        try:
            meta[key] = field.contents()
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"{path}: metadata {key!r} cannot be read; the file is damaged, download it again") from None
    return GGUFFile(path, meta, {t.name: t for t in reader.tensors})


_TOKENIZER_IDS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                  "tokenizer.ggml.eom_token_id")


def _get(f: GGUFFile, key: str, default=None, *, kind=int):
    """`{arch}.{key}` from the metadata, checked to be a positive number of `kind`."""
    full = f"{f.architecture}.{key}"
    value = f.meta.get(full, default)
    if value is None:
        raise InputError(f"{f.path}: metadata {full!r} is missing; the GGUF is incomplete, convert the model again")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or (kind is int and value != int(value)):
        raise InputError(f"{f.path}: metadata {full!r} must be a positive {kind.__name__} (got {value!r}); convert the model again")
    if kind is float:
        # GGUF stores float32: 1e-5 comes back as 9.99999974e-06. The shortest decimal that is the
        # same float32 is the value the converter was given.
        return float(str(np.float32(value)))
    return kind(value)


def parse_config(f: GGUFFile) -> ModelConfig:
    arch = f.architecture
    if arch not in ARCHITECTURES:
        raise InputError(
            f"{f.path}: GGUF architecture {arch!r} is not supported; bitexport reads 'bitnet' and 'llama' GGUF files "
            "with ternary (TQ1_0/TQ2_0) linears"
        )
    _check_rope_scaling(f)
    hidden = _get(f, "embedding_length")
    heads = _get(f, "attention.head_count")
    head_dim = _get(f, "attention.key_length", hidden // heads)
    if _get(f, "attention.value_length", head_dim) != head_dim:
        raise InputError(f"{f.path}: attention key_length != value_length; bitexport's attention needs them equal")
    if _get(f, "rope.dimension_count", head_dim) != head_dim:
        raise InputError(
            f"{f.path}: {arch}.rope.dimension_count {f.meta.get(f'{arch}.rope.dimension_count')} != head_dim {head_dim} "
            "(partial rotary embedding) is not supported; use a model with full-width RoPE"
        )
    emb = f.tensors.get("token_embd.weight")
    vocab = f.meta.get(f"{arch}.vocab_size") or (int(emb.shape[1]) if emb is not None and len(emb.shape) == 2 else None)
    if vocab is None:
        raise InputError(f"{f.path}: holds no 'token_embd.weight' and no {arch}.vocab_size; the GGUF is incomplete")
    eos = tuple(dict.fromkeys(int(f.meta[k]) for k in _TOKENIZER_IDS[1:] if k in f.meta))
    bos = f.meta.get("tokenizer.ggml.bos_token_id")
    sub_norms = arch == "bitnet"  # llama.cpp's bitnet graph requires them, its llama graph has none
    try:
        return ModelConfig(
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=_get(f, "feed_forward_length"),
            num_layers=_get(f, "block_count"),
            num_heads=heads,
            num_kv_heads=_get(f, "attention.head_count_kv", heads),
            head_dim=head_dim,
            hidden_act="silu",  # both graphs gate with SiLU
            rope_theta=_get(f, "rope.freq_base", 10000.0, kind=float),  # llama.cpp's default
            rms_norm_eps=_get(f, "attention.layer_norm_rms_epsilon", kind=float),
            attn_sub_norm=sub_norms,
            ffn_sub_norm=sub_norms,
            tie_word_embeddings=arch == "bitnet" or "output.weight" not in f.tensors,
            max_position_embeddings=_get(f, "context_length", 2048),
            bos_token_id=int(bos) if bos is not None else None,
            eos_token_ids=eos,
        )
    except ValueError as e:
        raise InputError(f"{f.path}: {e}; the GGUF metadata is inconsistent, convert the model again") from None


def _check_rope_scaling(f: GGUFFile) -> None:
    """Plain RoPE only. llama.cpp's bitnet converter writes scaling type 'linear' with factor 1.0,
    which is no scaling."""
    kind = f.meta.get(f"{f.architecture}.rope.scaling.type", "none")
    factor = f.meta.get(f"{f.architecture}.rope.scaling.factor", 1.0)
    if kind in ("none", "") or (kind == "linear" and float(factor) == 1.0):
        return
    raise InputError(
        f"{f.path}: {f.architecture}.rope.scaling.type {kind!r} (factor {factor}) is not supported (only plain RoPE); "
        "use a model without rope scaling"
    )


def _torch(t) -> torch.Tensor:
    """A non-ternary tensor as torch: float types as stored, anything else through gguf's own
    dequantize (exactly the values llama.cpp computes with)."""
    kind = t.tensor_type.name
    data = np.asarray(t.data)
    if kind in ("F32", "F16"):
        return torch.from_numpy(data.copy())
    if kind == "BF16":  # the reader gives its bytes: two a value
        return torch.from_numpy(np.ascontiguousarray(data).view(np.int16).copy()).view(torch.bfloat16)
    from gguf.quants import dequantize

    try:
        return torch.from_numpy(np.ascontiguousarray(dequantize(data, t.tensor_type)))
    except NotImplementedError:
        raise InputError(f"tensor {t.name!r} has type {kind}, which the gguf package cannot dequantize") from None


def load(f: GGUFFile, cfg: ModelConfig, max_seq_len: int) -> LoadedModel:
    path = f.path
    stored: dict[str, StoredFormat] = {}
    linear_names = set()
    for i in range(cfg.num_layers):
        for ours in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            linear_names.add(gguf_name(f"model.layers.{i}.{ours}") + ".weight")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in f.tensors.items():
        if name in linear_names and t.tensor_type.name in gguf_blocks.BLOCK_BYTES:
            tensors[name] = torch.from_numpy(np.array(t.data, dtype=np.uint8))  # [out, bytes a row], decoded on use
        elif name in linear_names or name in _GLOBAL_NAMES.values() or name.endswith(("norm.weight", ".scale")):
            tensors[name] = _torch(t)
        else:
            # no graph reads it: kept under its name, undecoded, so that refuse_unused names it
            tensors[name] = torch.zeros(0)
    table = GGUFTable(tensors, path, DESCRIBED_BY)

    def read_linear(prefix: str, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        name = gguf_name(prefix)
        codes, scale = _ternary(f, table, f"{name}.weight", shape, stored)
        if f.architecture == "bitnet" and f"{name}.scale" in table.tensors:  # llama.cpp's llama has none
            s = table.take(f"{name}.scale", (1,)).float()
            positive_scale(table, f"{name}.scale", s)
            record(stored, "scale tensors", str(s.dtype).removeprefix("torch."), table.tensors[f"{name}.scale"], 1)
            scale = scale * s.reshape(1)
        positive_scale(table, f"{name}.weight", scale)
        if f.architecture == "llama" and name.endswith(("attn_q", "attn_k")):
            heads = cfg.num_heads if name.endswith("attn_q") else cfg.num_kv_heads
            codes = _unpermute_rope_rows(codes, heads)
        return codes, scale

    model = build_decoder(cfg, table, read_linear, stored, max_seq_len)
    tok_dir = tokenizer_folder(path)
    return LoadedModel(
        name=path.stem,
        source_format=f"gguf-{f.architecture}",
        config=cfg,
        model=model,
        tokenizer_path=tok_dir / "tokenizer.json",
        source_path=path,
        stored=stored,
        details={"gguf_architecture": f.architecture},
    )


def _ternary(f: GGUFFile, table: TensorTable, name: str, shape: tuple[int, int], stored) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes [out, in], scale [1]) of one ternary linear."""
    out, k = shape
    t = f.tensors.get(name)
    kind = t.tensor_type.name if t is not None else None
    if t is not None and kind not in TERNARY_TYPES:
        raise InputError(
            f"{f.path}: tensor {name!r} is {kind}; bitexport reads ternary linears stored as TQ2_0, TQ1_0 or "
            "F32/F16/BF16 ternary values: convert the model with llama.cpp's --outtype tq2_0 or tq1_0"
        )
    if kind in gguf_blocks.BLOCK_BYTES:
        dims = tuple(int(x) for x in reversed(t.shape))  # ggml lists dimensions innermost first
        if dims != (out, k):
            raise InputError(
                f"{f.path}: tensor {name!r} has shape {dims} but {DESCRIBED_BY} implies {(out, k)}; "
                "the file is inconsistent, convert the model again"
            )
        raw = table.take(name)
        dec = gguf_blocks.decode(kind, raw.numpy())
        if dec.bad is not None:
            r, b = dec.bad
            raise InputError(
                f"{f.path}: tensor {name!r} ({kind}) holds a corrupt block (row {r}, block {b}: a value that is no "
                "ternary code); the file is damaged, download or convert it again"
            )
        record(stored, "ternary", kind, raw, out * k)
        return torch.from_numpy(dec.codes), _block_scale(f, name, dec)
    w = table.take(name, shape).float()
    record(stored, "ternary", f"{kind} ternary", table.tensors[name], out * k)
    a = w.abs().max()
    if a == 0:
        raise InputError(f"{f.path}: tensor {name!r} is all zeros (a dead layer); the file is damaged, download or convert it again")
    codes = torch.round(w / a).clamp(-1, 1)
    if not torch.equal(codes * a, w):
        raise InputError(
            f"{f.path}: tensor {name!r} ({kind}) is not ternary (its values are not {{-a, 0, a}} for one a); "
            "bitexport reads ternary BitNet weights only"
        )
    return codes.to(torch.int8), a.reshape(1)


def _block_scale(f: GGUFFile, name: str, dec: gguf_blocks.Decoded) -> torch.Tensor:
    """The one scale every block holding a non-zero code carries; refused where they differ
    (averaging them would compute a different network than the file's)."""
    live = (dec.codes.reshape(dec.d.shape[0], dec.d.shape[1], -1) != 0).any(axis=-1)
    if not live.any():
        raise InputError(f"{f.path}: tensor {name!r} is all zeros (a dead layer); the file is damaged, download or convert it again")
    bits = dec.d.view(np.uint16)[live]
    values = np.unique(bits)
    if len(values) > 1:
        shown = ", ".join(f"{float(v):g}" for v in values[:4].view(np.float16))
        raise InputError(
            f"{f.path}: tensor {name!r} has {len(values)} different block scales ({shown}{', ...' if len(values) > 4 else ''}) "
            "where BitNet has one scale a tensor; bitexport will not average them: use a GGUF converted from a BitNet "
            "checkpoint (llama.cpp's --outtype tq2_0/tq1_0)"
        )
    return torch.tensor([float(values.view(np.float16)[0])], dtype=torch.float32)


def _unpermute_rope_rows(codes: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's converter permutation for `llama` RoPE: within each head it interleaved the
    two halves of the rows (row r of the first half to 2r, of the second to 2r + 1)."""
    out, k = codes.shape
    return codes.reshape(heads, out // heads // 2, 2, k).transpose(1, 2).reshape(out, k).contiguous()
