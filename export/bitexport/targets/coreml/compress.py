"""Which weights of the converted Core ML program get compressed, and how.

- `tq2` (default): each ternary linear's weight (codes * scale) is palettized with a per-tensor
  lookup table [-s, 0, +s, 0] in fp16: 2-bit indices (code + 1) plus one 4-entry LUT
  (`constexpr_lut_to_dense`), built by `ternary_lut` as a custom palettizer function. BitNet's scale is per tensor, so a per-row LUT (NOTES.md's
  `per_grouped_channel`, group 1) would only repeat the same three values in every row: 64 bits
  a row, +0.025 bit a weight at 2560 columns but +1 bit at the tiny model's 64.
- `int4`: blockwise symmetric int4 (`constexpr_blockwise_shift_scale`, block 32 along the input):
  the quantizer maps +-s to +-7 with block scale fp16(s/7), so the codes are exact and the scale
  is rounded to fp16 once, as in the LUT.
- the output head: int4 blockwise (head == "int4") or left in float (head == "fp32");
- the embedding table (the const a `gather` reads): fp16, int8 per row (`linear_symmetric`, one
  fp16 scale a row) or int4 blockwise like the head. coremltools' symmetric rule: scale =
  max|block| / 7 (int4) or / 127 (int8), computed in fp16 on the fp16 table, codes
  clip(round(w / scale)). A tied head whose format matches the table's (int4/int4, fp32/fp16)
  reads the same const, so the package stores it once.

Only the consts named in `op_name_configs` are touched (the global config is None), and the
names are found from the module scope of the `linear` op that consumes each weight, so neither
the embedding nor a norm weight can be caught by a size threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitexport.targets.coreml.fp16 import Scope, op_scope

INT4_BLOCK = 32
HEAD_SCOPE: Scope = ("lm_head",)
TERNARY_PROJS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class WeightConst:
    """The const op holding one linear's weight in the converted (uncompressed) program."""

    module: str  # e.g. "layers.0.self_attn.q_proj" or "lm_head"
    const_name: str
    shape: tuple[int, int]  # (out, in)


def find_linear_weights(prog) -> tuple[list[WeightConst], WeightConst | None]:
    """(ternary linears in program order, the head) of a freshly converted MIL program.

    A QuantLinear's weight is consumed by a `linear` op whose scope is
    (layer index, 'self_attn'|'mlp', proj name, 'linear').
    """
    ternary, head = [], None
    for op in prog.functions["main"].operations:
        if op.op_type != "linear":
            continue
        scope = op_scope(op)
        w = op.weight.op
        if w.op_type != "const":
            raise ValueError(f"linear {op.name} ({'.'.join(scope)}) has a computed weight ({w.op_type})")
        shape = tuple(int(d) for d in op.weight.shape)
        if scope == HEAD_SCOPE:
            head = WeightConst("lm_head", w.name, shape)
        elif len(scope) == 4 and scope[2] in TERNARY_PROJS and scope[3] == "linear":
            module = f"layers.{scope[0]}.{scope[1]}.{scope[2]}"
            ternary.append(WeightConst(module, w.name, shape))
        else:
            raise ValueError(f"unexpected linear op in scope {'.'.join(scope)}")
    return ternary, head


def find_embedding(prog) -> WeightConst | None:
    """The const op holding the embedding table: what the program's first `gather` reads."""
    for op in prog.functions["main"].operations:
        if op.op_type == "gather" and op.x.op is not None and op.x.op.op_type == "const" and op.x.rank == 2:
            return WeightConst("embed_tokens", op.x.op.name, tuple(int(d) for d in op.x.shape))
    return None


def int8_row_config():
    import coremltools.optimize.coreml as cto

    return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)


def int4_config(in_features: int):
    import coremltools.optimize.coreml as cto

    # a block must tile the row; a row that 32 does not divide gets one block (per-channel)
    block = INT4_BLOCK if in_features % INT4_BLOCK == 0 else in_features
    return cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=block, weight_threshold=0
    )


def ternary_lut(val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LUT [-s, 0, s, 0] and 2-bit indices (code + 1) of a tensor whose values are {-s, 0, s}.

    What coremltools' mode="unique" computes, without its np.unique over rows, which sorts every
    weight (minutes per BitNet-2B layer); and it refuses a tensor that is not ternary instead of
    quietly widening the palette.
    """
    flat = val.reshape(-1)
    s = np.abs(flat).max() if flat.size else val.dtype.type(0)
    if np.any((flat != 0) & (np.abs(flat) != s)):
        raise ValueError("a weight marked ternary holds more than {-s, 0, s}")
    lut = np.array([-s, 0, s, 0], dtype=val.dtype)
    return lut, (np.sign(flat) + 1).astype(np.uint8)


def tq2_config():
    import coremltools.optimize.coreml as cto

    return cto.OpPalettizerConfig(mode="custom", lut_function=ternary_lut, granularity="per_tensor", weight_threshold=0)


def compression_pipeline(
    ternary: list[WeightConst], head: WeightConst | None, weights: str, head_format: str,
    table: WeightConst | None = None, embedding_format: str = "fp16",
):
    """A pass pipeline that compresses exactly the named weight consts of a MIL program.

    Run as the main pipeline of `ct.convert(program)`, after the full conversion pipeline (fp16
    casts included) ran on the program: the consts are then final fp16 tensors, and compressing
    them takes one pass over the program instead of a spec round trip per compression kind.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    if weights not in ("tq2", "int4"):
        raise ValueError(f"unknown Core ML weight format {weights!r}")
    lut = {w.const_name: tq2_config() for w in ternary} if weights == "tq2" else {}
    quant = {w.const_name: int4_config(w.shape[1]) for w in ternary} if weights == "int4" else {}
    if head_format == "int4" and head is not None:
        quant[head.const_name] = int4_config(head.shape[1])
    if table is not None and embedding_format == "int4":
        quant[table.const_name] = int4_config(table.shape[1])
    elif table is not None and embedding_format == "int8":
        if head is not None and head.const_name == table.const_name:
            raise ValueError("an int8 embedding table cannot be shared with the head")
        quant[table.const_name] = int8_row_config()
    passes = []
    if lut:
        passes.append("compression::palettize_weights")
    if quant:
        passes.append("compression::linear_quantize_weights")
    pipeline = ct.PassPipeline(pass_names=passes + ["common::dead_code_elimination"], pipeline_name="bitexport_compress")
    if lut:
        pipeline.set_options("compression::palettize_weights", {"config": cto.OptimizationConfig(global_config=None, op_name_configs=lut)})
    if quant:
        pipeline.set_options(
            "compression::linear_quantize_weights", {"config": cto.OptimizationConfig(global_config=None, op_name_configs=quant)}
        )
    return pipeline
