"""The decoder's building blocks as ONNX subgraphs: BitLinear (per weight format), norms, head.

BitLinear's per-token int8 activation quantization is reproduced with standard ops
(m = max(ReduceMax(|x|), 1e-5); s = 127 / m; xq = Round(x * s)). With MatMulNBits accuracy_level
4, ORT quantizes its input to int8 once more, per K block, by itself (MLAS QuantizeARow: block scale
= block absmax / 127, values * (127 / absmax) rounded half-to-even, symmetric, no zero point). Two
forms of the product:

- activations "exact": MatMulNBits reads xq itself with one sentinel input fixed at 127 at the end
  of every K block (its weight is the zero code). Every block's absmax is then exactly 127, ORT's
  block scale exactly 1.0 and its requantization maps each integer xq to itself, so the int32 dot
  product is the reference's; y = (acc * gamma) / s. K grows by one input per block (pack.py
  picks the fast block size that wastes least).
- activations "block": x' = xq / s feeds MatMulNBits; ORT's second rounding is exact in the block
  holding the token's largest value and moves other values by up to half a step of that block's
  grid (the logits move by ~1-2 % of their range on tiny models: tests/targets/onnx).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitexport.targets.onnx.graph import FLOAT, MS_DOMAIN, Graph
from bitexport.targets.onnx.pack import (
    SENTINEL,
    block_size_for,
    pack_ternary,
    quantize_int4_blockwise,
    quantize_int8_blockwise,
    sentinel_block_size,
    with_sentinel_columns,
)
from bitexport.model.quant import ACT_EPS

# --weights of the ONNX target -> MatMulNBits bits (None: a plain fp32 MatMul)
TERNARY_BITS = {"tq2": 2, "int4": 4, "fp32": None}
HEAD_BLOCK_SIZE = 32  # int4 head: the finest fast block, since the head is the lossy part


HEAD_INT8_BLOCKS = (256, 128, 64, 32)  # int8 head: the largest MatMulNBits block dividing K (fewest scales)
ACTIVATIONS = ("exact", "block")


@dataclass(frozen=True)
class LinearFormat:
    weights: str  # "tq2" | "int4" | "fp32"
    accuracy_level: int  # MatMulNBits accuracy_level: 4 = int8 activations (fast), 0 = fp32 (exact)
    activations: str = "block"  # with accuracy 4: "block" (ORT's own blocks) or "exact" (sentinel blocks)

    @property
    def sentinels(self) -> bool:
        return self.activations == "exact" and self.accuracy_level == 4 and TERNARY_BITS[self.weights] is not None


def quantize_activations_int(g: Graph, x: str, name: str) -> tuple[str, str]:
    """BitLinear's per-token absmax int8 codes of x [..., K] as integer-valued floats, and s."""
    m = g.op("ReduceMax", [g.op("Abs", [x], f"{name}/abs"), g.const([-1], np.int64)], f"{name}/max", keepdims=1)
    m = g.op("Max", [m, g.const(ACT_EPS)], f"{name}/clamp")
    s = g.op("Div", [g.const(127.0), m], f"{name}/scale")  # a true division, as the reference
    # No Clip to [-128, 127]: |x_i| <= m, so |x_i * s| <= 127 * (1 + 2 ulp) and Round never leaves
    # [-127, 127]; the reference's clamp is a no-op and the op would cost a node per input in decode.
    return g.op("Round", [g.op("Mul", [x, s], f"{name}/mul")], f"{name}/round"), s


def quantize_activations(g: Graph, x: str, name: str) -> str:
    """BitLinear's per-token absmax int8 fake quantization of x [..., K]: xq / s."""
    xq, s = quantize_activations_int(g, x, name)
    return g.op("Div", [xq, s], f"{name}/dequant")


def insert_sentinels(g: Graph, xq: str, k: int, block_size: int, name: str) -> str:
    """xq [B, S, K] -> [B, S, k_blocks * block_size]: each block holds block_size - 1 inputs (the
    last one zero-padded) and ends with SENTINEL. Two Pads and two Reshapes, no gather."""
    per = block_size - 1
    k_blocks = -(-k // per)
    if k_blocks * per != k:
        xq = g.op("Pad", [xq, g.const([0, 0, 0, 0, 0, k_blocks * per - k], np.int64), g.const(0.0)],
                  f"{name}/pad_k", mode="constant")
    xb = g.op("Reshape", [xq, g.const([0, 0, k_blocks, per], np.int64)], f"{name}/blocks")
    xb = g.op("Pad", [xb, g.const([0, 0, 0, 0, 0, 0, 0, 1], np.int64), g.const(float(SENTINEL))],
              f"{name}/sentinel", mode="constant")
    return g.op("Reshape", [xb, g.const([0, 0, k_blocks * block_size], np.int64)], f"{name}/with_sentinels")


def bitlinear(g: Graph, x: str, parts: list[tuple[np.ndarray, float]], fmt: LinearFormat, name: str) -> str:
    """BitLinear y [..., N] of x [..., K] (activations quantized here) in the format `fmt`."""
    if not fmt.sentinels:
        return ternary_linear(g, quantize_activations(g, x, f"{name}/act_quant"), parts, fmt, name)
    xq, s = quantize_activations_int(g, x, f"{name}/act_quant")
    k = parts[0][0].shape[1]
    bs = sentinel_block_size(k)
    acc = ternary_linear(g, insert_sentinels(g, xq, k, bs, f"{name}/act_quant"), parts, fmt, name, sentinel_block=bs)
    return g.op("Div", [acc, s], f"{name}/unscale")


def ternary_linear(
    g: Graph, x: str, parts: list[tuple[np.ndarray, float]], fmt: LinearFormat, name: str,
    sentinel_block: int | None = None,
) -> str:
    """y = x' @ W^T for an already quantized x' [..., K], W the row-wise concatenation of the
    parts (codes int8 [N_i, K], per-tensor scale). Linears that read the same input (q/k/v,
    gate/up) run as one node: ORT then quantizes x' once and runs one kernel instead of three.
    sentinel_block: x' is laid out by insert_sentinels with this block size (zero weights there)."""
    codes = np.concatenate([c for c, _ in parts], axis=0)
    if sentinel_block is not None:
        codes = with_sentinel_columns(codes, sentinel_block)
    n, k = codes.shape
    bits = TERNARY_BITS[fmt.weights]
    if bits is None:
        w_t = np.concatenate([c.astype(np.float32) * np.float32(sc) for c, sc in parts], axis=0).T
        return g.op("MatMul", [x, g.init(f"{name}.weight_t", w_t)], name)
    bs = sentinel_block or block_size_for(k)
    b = g.init(f"{name}.qweight", pack_ternary(codes, bits, bs))
    # One scale per part: the file keeps the scalars and the [N, k_blocks] table MatMulNBits wants
    # is Expand(+Concat) that ORT constant-folds at session start, before it prepacks the weights
    # (so the fast kernel still sees constant scales; measured at the same speed as stored ones).
    k_blocks = -(-k // bs)
    tables = []
    for i, (c, sc) in enumerate(parts):
        gamma = g.init(f"{name}.scale{i}", np.array([sc], dtype=np.float32))
        tables.append(g.op("Expand", [gamma, g.const([c.shape[0], k_blocks], np.int64)], f"{name}/scales{i}"))
    scales = tables[0] if len(tables) == 1 else g.op("Concat", tables, f"{name}/scales", axis=0)
    return g.op(
        "MatMulNBits", [x, b, scales], name, domain=MS_DOMAIN,
        K=k, N=n, bits=bits, block_size=bs, accuracy_level=fmt.accuracy_level,
    )


def rms_norm(g: Graph, x: str, weight: np.ndarray, eps: float, name: str) -> str:
    w = g.init(f"{name}.weight", weight.astype(np.float32))
    return g.op("RMSNormalization", [x, w], name, axis=-1, epsilon=eps, stash_type=1)


def add_rms_norm(g: Graph, x: str, residual: str, weight: np.ndarray, eps: float, name: str) -> tuple[str, str]:
    """(norm(x + residual), x + residual) in one SkipSimplifiedLayerNormalization."""
    w = g.init(f"{name}.weight", weight.astype(np.float32))
    normed, _, _, total = g.node(
        "SkipSimplifiedLayerNormalization", [x, residual, w], name, n_out=4, domain=MS_DOMAIN, epsilon=eps
    )
    return normed, total


def activation(g: Graph, x: str, kind: str, name: str) -> str:
    if kind == "relu2":
        r = g.op("Relu", [x], f"{name}/relu")
        return g.op("Mul", [r, r], f"{name}/square")
    if kind == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{name}/sigmoid")], f"{name}/silu")
    raise ValueError(f"activation {kind!r} has no ONNX lowering")


@dataclass
class Table:
    """How a [V, H] table (embedding or head weight) is stored: initializer names of its forms."""

    fp32: str | None = None  # float [V, H]
    fp16: str | None = None  # float16 [V, H]
    int4: tuple[str, str] | None = None  # (uint8 [V, H/2] nibbles, float scales [V, H/32])
    int8: tuple[str, str] | None = None  # (uint8 [V, H] codes + 128, float scales [V, H/block])


def _int4_table(g: Graph, w: np.ndarray, name: str) -> tuple[str, str]:
    b, scales = quantize_int4_blockwise(w.astype(np.float32), HEAD_BLOCK_SIZE)
    # stored as GatherBlockQuantized reads it, [V, H/2]: the same bytes as MatMulNBits' B [V, k_blocks, 16]
    return g.init(f"{name}.qweight", b.reshape(b.shape[0], -1)), g.init(f"{name}.scales", scales)


def _int8_table(g: Graph, w: np.ndarray, name: str) -> tuple[str, str]:
    q, scales = quantize_int8_blockwise(w.astype(np.float32), int8_head_block(w.shape[1]))
    # [V, H]: GatherBlockQuantized (bits 8, default zero point 128) and MatMulNBits 8-bit read the same bytes
    return g.init(f"{name}.qweight", q.reshape(q.shape[0], -1)), g.init(f"{name}.scales", scales)


EMBEDDING_FORMATS = ("fp32", "fp16", "int8", "int4")


def embedding_label(fmt: str, hidden: int) -> str:
    """What the manifest says about an embedding stored in `fmt`."""
    if fmt == "int4":
        return f"int4-block{HEAD_BLOCK_SIZE}"
    if fmt == "int8":
        return f"int8-block{int8_head_block(hidden)}"
    return fmt


def embedding(g: Graph, ids: str, w: np.ndarray, fmt: str, name: str) -> tuple[str, Table]:
    """Rows of the embedding table w [V, H] for token ids, and how the table was stored.

    "fp32": a plain Gather. "fp16": a Gather on the float16 table, the rows widened by a Cast (half
    the file and half the table's memory; the rows are exactly fp16(w)). "int4" / "int8":
    GatherBlockQuantized on the blockwise table (lossy; int4 blocks of 32, int8 blocks of up to
    256, both symmetric with ORT's default zero point), the same quantization and bytes as the
    int4 / int8 head, so a tied head of the same format reuses them."""
    if fmt == "fp32":
        table = g.init(f"{name}.weight", w.astype(np.float32))
        return g.op("Gather", [table, ids], name, axis=0), Table(fp32=table)
    if fmt == "fp16":
        table = g.init(f"{name}.weight_fp16", w.astype(np.float16))
        rows = g.op("Gather", [table, ids], f"{name}/gather", axis=0)
        return g.op("Cast", [rows], name, to=FLOAT), Table(fp16=table)
    if fmt in ("int4", "int8"):
        if fmt == "int4":
            bits, bs, (data, scales) = 4, HEAD_BLOCK_SIZE, _int4_table(g, w, name)
        else:
            bits, bs, (data, scales) = 8, int8_head_block(w.shape[1]), _int8_table(g, w, name)
        x = g.op("GatherBlockQuantized", [data, ids, scales], name, domain=MS_DOMAIN,
                 bits=bits, block_size=bs, gather_axis=0, quantize_axis=1)
        return x, Table(**{fmt: (data, scales)})
    raise ValueError(f"embedding format {fmt!r} is not one of {', '.join(EMBEDDING_FORMATS)}")


HEAD_FORMATS = ("int4", "int8", "fp16", "fp32")


def head_label(fmt: str, hidden: int) -> str:
    """What the manifest says about a head stored in `fmt`."""
    if fmt == "int4":
        return f"int4-block{HEAD_BLOCK_SIZE}"
    if fmt == "int8":
        return f"int8-block{int8_head_block(hidden)}"
    return fmt


def int8_head_block(hidden: int) -> int:
    return next((b for b in HEAD_INT8_BLOCKS if hidden % b == 0), HEAD_INT8_BLOCKS[-1])


def head(g: Graph, x: str, w: np.ndarray, shared: Table, fmt: str, accuracy_level: int, name: str, out: str) -> str:
    """Logits [B, 1, V] from x [B, 1, H] into the tensor `out`; `w` is the head weight [V, H] and
    `shared` what the file already holds of it (the embedding's table when tied, else nothing).

    "int4": MatMulNBits 4-bit, blockwise symmetric, block 32 (lossy: the error is measured in the
    tests); an int4 embedding table is reused through a Reshape that ORT folds at load (int8 alike).
    "int8": MatMulNBits 8-bit, symmetric blocks of up to 256 (the largest fast block dividing H:
    nearly per channel, 8.1-8.25 bits a weight).
    Both run with `accuracy_level` (4: ORT quantizes the head's input to int8 per K block).
    "fp16": the table stored in float16 (an fp16 embedding's, when tied) and widened by a Cast
    that ORT folds at load (half the file;
    ORT's CPU computes in fp32, so speed and memory are fp32's; the weights are exactly fp16(w)).
    "fp32": a Gemm with transB on the [V, H] table itself, so a tied head shares the embedding's
    initializer instead of storing a transposed copy.
    """
    vocab, hidden = w.shape
    if fmt in ("int4", "int8"):
        if fmt == "int4":
            bits, bs = 4, HEAD_BLOCK_SIZE
            data, scales = shared.int4 or _int4_table(g, w, name)
        else:
            bits, bs = 8, int8_head_block(hidden)
            data, scales = shared.int8 or _int8_table(g, w, name)
        k_blocks = -(-hidden // bs)
        b = g.op("Reshape", [data, g.const([vocab, k_blocks, bs * bits // 8], np.int64)], f"{name}/blocks")
        return g.node(
            "MatMulNBits", [x, b, scales], name, domain=MS_DOMAIN, outputs=[out],
            K=hidden, N=vocab, bits=bits, block_size=bs, accuracy_level=accuracy_level,
        )[0]
    if fmt == "fp16":
        half = shared.fp16 or g.init(f"{name}.weight_fp16", w.astype(np.float16))
        table = g.op("Cast", [half], f"{name}/widen", to=FLOAT)
    elif fmt == "fp32":
        table = shared.fp32 or g.init(f"{name}.weight", w.astype(np.float32))
    else:
        raise ValueError(f"head format {fmt!r} is not one of {', '.join(HEAD_FORMATS)}")
    x2 = g.op("Reshape", [x, g.const([-1, hidden], np.int64)], f"{name}/flatten")
    y = g.op("Gemm", [x2, table], f"{name}/gemm", transB=1)
    return g.node("Reshape", [y, g.const([-1, 1, vocab], np.int64)], name, outputs=[out])[0]
