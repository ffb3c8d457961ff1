"""Checks that an "exact activations" export really has the sentinel layout (ops.insert_sentinels).

ORT's int8 requantization is lossless only if every K block of every ternary MatMulNBits input
ends with the sentinel 127 and the weights there are the zero code; a graph that lost one Pad, used
another block size than the weights, or put a nonzero weight under a sentinel would still run on
the fast path and still produce plausible logits, so `verify` and the tests read the graph itself.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from bitexport.targets.onnx.inspect import LinearStorage
from bitexport.targets.onnx.pack import SENTINEL, unpack_bits


def _producers(proto: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in proto.graph.node for o in n.output}


def _const(name: str, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    t = inits.get(name)
    return None if t is None else numpy_helper.to_array(t)


def _layout_problem(node: onnx.NodeProto, lin: LinearStorage, producers: dict, inits: dict) -> str | None:
    """Why the input of `node` is not [.., k_blocks * bs] with SENTINEL closing every block, or None."""
    flat = producers.get(node.input[0])
    if flat is None or flat.op_type != "Reshape":
        return "its input is not the sentinel layout (no Reshape of padded blocks)"
    pad = producers.get(flat.input[0])
    if pad is None or pad.op_type != "Pad":
        return "its input has no sentinel Pad"
    value = _const(pad.input[2], inits) if len(pad.input) > 2 and pad.input[2] else None
    pads = _const(pad.input[1], inits)
    if value is None or value.size != 1 or float(value.reshape(-1)[0]) != SENTINEL:
        return f"its sentinel Pad writes {None if value is None else value.reshape(-1).tolist()}, not {SENTINEL}"
    if pads is None or pads.tolist() != [0, 0, 0, 0, 0, 0, 0, 1]:
        return "its sentinel Pad does not add exactly one element at the end of each block"
    blocks = producers.get(pad.input[0])
    shape = _const(blocks.input[1], inits) if blocks is not None and blocks.op_type == "Reshape" else None
    if shape is None or len(shape) != 4:
        return "its input is not reshaped into K blocks before the sentinel Pad"
    k_blocks, per = int(shape[2]), int(shape[3])
    if per + 1 != lin.block_size or k_blocks * lin.block_size != lin.k:
        return (f"sentinel blocks of {per} + 1 inputs x {k_blocks} do not match block_size={lin.block_size}, "
                f"K={lin.k}: ORT's blocks would not each hold one sentinel")
    return None


def _weight_problem(node: onnx.NodeProto, lin: LinearStorage, inits: dict) -> str | None:
    """Why some weight under a sentinel is not the zero code (None also when the weights live in
    external data that was not loaded)."""
    b = inits.get(node.input[1])
    if b is None or (not b.raw_data and b.data_location == onnx.TensorProto.EXTERNAL):
        return None
    q = unpack_bits(numpy_helper.to_array(b), lin.bits, lin.k).reshape(lin.n, -1, lin.block_size)
    zero = 1 << (lin.bits - 1)  # the default zero point: no zero-point tensor is written
    bad = int(np.count_nonzero(q[:, :, -1] != zero))
    return f"{bad} nonzero weight(s) under sentinels" if bad else None


def sentinel_problems(proto: onnx.ModelProto, linears: list[LinearStorage]) -> list[str]:
    """One line per ternary MatMulNBits whose input or weights break the sentinel layout."""
    producers = _producers(proto)
    inits = {t.name: t for t in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    problems = []
    for lin in linears:
        if lin.op != "MatMulNBits":
            continue
        node = nodes[lin.name]
        why = _layout_problem(node, lin, producers, inits) or _weight_problem(node, lin, inits)
        if why:
            problems.append(f"{lin.name}: {why}")
    return problems
