"""Reading an exported decoder graph back: how each ternary linear is stored and whether it is on
ORT's fast 2-bit path. Used by the target's details and `verify`, and by the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto

from bitexport.targets.onnx.pack import FAST_BLOCK_SIZES

# the ternary products of one layer, as targets/onnx/decoder.py names them (q/k/v and gate/up fused)
FUSED_SUFFIXES = (".self_attn.qkv_proj", ".self_attn.o_proj", ".mlp.gate_up_proj", ".mlp.down_proj")
LINEARS_PER_LAYER = len(FUSED_SUFFIXES)
# with use_rms_norm each linear normalizes its own input, so q/k/v and gate/up are separate products
SEPARATE_SUFFIXES = (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".mlp.gate_proj", ".mlp.up_proj")
TERNARY_SUFFIXES = FUSED_SUFFIXES + SEPARATE_SUFFIXES


@dataclass
class LinearStorage:
    name: str
    op: str  # "MatMulNBits" or "MatMul"
    n: int
    k: int
    bits: int | None  # None for a float MatMul
    block_size: int | None
    accuracy_level: int | None
    zero_points: str  # "absent", "packed-uint8" or "float"
    weight_bytes: int  # B (or the float weight)
    scale_bytes: int  # what the file stores for the scales (a scalar when expanded in-graph)
    zero_point_bytes: int
    inputs: int | None = None  # the layer's own K where the node's K also holds sentinel inputs

    @property
    def weights(self) -> int:
        """Ternary weights the layer holds (sentinel columns of the exact form not counted)."""
        return self.n * (self.inputs or self.k)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * (self.weight_bytes + self.scale_bytes + self.zero_point_bytes) / self.weights

    def fast_path_problem(self) -> str | None:
        """Why this linear is off ORT's fast 2-bit path, or None."""
        if self.op != "MatMulNBits":
            return f"{self.name}: {self.op}, not MatMulNBits"
        if self.bits != 2:
            return f"{self.name}: bits={self.bits}, not 2"
        if self.accuracy_level != 4:
            return f"{self.name}: accuracy_level={self.accuracy_level}, not 4 (int8 activations)"
        if self.block_size not in FAST_BLOCK_SIZES:
            return f"{self.name}: block_size={self.block_size}, not one of {FAST_BLOCK_SIZES}"
        if self.zero_points == "float":
            return f"{self.name}: float zero points (only packed uint8 or none are fast)"
        return None


def _nbytes(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _stored_floats(name: str, inits: dict, producers: dict) -> list[onnx.TensorProto]:
    """The float initializers a tensor is computed from (itself, if stored): what the file holds
    for scales that the graph expands from per-tensor scalars."""
    if name in inits:
        t = inits[name]
        return [t] if t.data_type == TensorProto.FLOAT else []
    node = producers.get(name)
    if node is None:
        return []
    return [t for i in node.input if i for t in _stored_floats(i, inits, producers)]


def ternary_linears(model: onnx.ModelProto) -> list[LinearStorage]:
    """Every ternary linear of the graph (nodes named `layers.<i>.<module>` by the lowering)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    out = []
    for node in g.node:
        if node.op_type not in ("MatMulNBits", "MatMul") or not node.name.endswith(TERNARY_SUFFIXES):
            continue
        if node.op_type == "MatMul":
            w = inits[node.input[1]]
            out.append(LinearStorage(node.name, "MatMul", w.dims[1], w.dims[0], None, None, None, "absent", _nbytes(w), 0, 0))
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale_bytes = sum(_nbytes(t) for t in _stored_floats(node.input[2], inits, producers))
        zp = "absent"
        zp_bytes = 0
        if len(node.input) > 3 and node.input[3]:
            t = inits[node.input[3]]
            zp = "packed-uint8" if t.data_type == TensorProto.UINT8 else "float"
            zp_bytes = _nbytes(t)
        out.append(
            LinearStorage(
                node.name, "MatMulNBits", attrs["N"], attrs["K"], attrs["bits"], attrs["block_size"],
                attrs.get("accuracy_level", 0), zp, _nbytes(inits[node.input[1]]), scale_bytes, zp_bytes,
                _inputs_before_sentinels(node.input[0], inits, producers),
            )
        )
    return out


def _inputs_before_sentinels(name: str, inits: dict, producers: dict) -> int | None:
    """K of x before ops.insert_sentinels (Reshape <- Pad 127 <- Reshape [.., blocks, per] <- Pad K?),
    or None for an input that is not in the sentinel layout."""
    chain = []
    for op in ("Reshape", "Pad", "Reshape"):
        node = producers.get(name)
        if node is None or node.op_type != op:
            return None
        chain.append(node)
        name = node.input[0]
    shape = inits.get(chain[2].input[1])
    if shape is None:
        return None
    dims = onnx.numpy_helper.to_array(shape)
    k = int(dims[-2]) * int(dims[-1])
    pad_k = producers.get(name)
    if pad_k is not None and pad_k.op_type == "Pad" and pad_k.input[1] in inits:
        k -= int(onnx.numpy_helper.to_array(inits[pad_k.input[1]])[-1])
    return k


def ternary_bits_per_weight(linears: list[LinearStorage]) -> float:
    stored = sum(x.weight_bytes + x.scale_bytes + x.zero_point_bytes for x in linears)
    return 8.0 * stored / max(sum(x.weights for x in linears), 1)


def float_weight_initializers(model: onnx.ModelProto) -> list[str]:
    """Float initializers of rank >= 2 other than the embedding, the head and the RoPE caches:
    a ternary weight kept in float would show up here."""
    allowed = ("embed_tokens.", "lm_head.", "rope.")
    return [
        t.name
        for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
        and len(t.dims) >= 2
        and not t.name.startswith(allowed)
    ]


def load_graph_only(path: str) -> onnx.ModelProto:
    """The model without external tensor data (enough for the structure checks)."""
    return onnx.load(path, load_external_data=False)


__all__ = ["LinearStorage", "float_weight_initializers", "load_graph_only", "ternary_bits_per_weight", "ternary_linears"]


def _component_of(name: str) -> str:
    """The component an initializer belongs to, by the names decoder.py gives them."""
    if name.startswith("embed_tokens."):
        return "embedding"
    if name.startswith("lm_head."):
        return "head"
    if name.startswith("layers.") and any(s + "." in name for s in TERNARY_SUFFIXES):
        return "ternary"
    if name.endswith(("norm.weight", "layernorm.weight")):
        return "norms"
    return "other"


def component_bytes(folder) -> dict:
    """The ONNX artifact folder's bytes by component (targets/components.py): initializers by name,
    the rest of the folder (graph, genai and tokenizer files) as other. A head that reads the
    embedding's table (tied, same format) has no initializer of its own."""
    from pathlib import Path

    from bitexport.targets.components import split

    folder = Path(folder)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    counted: dict[str, int] = {}
    for t in model.graph.initializer:
        c = _component_of(t.name)
        counted[c] = counted.get(c, 0) + _nbytes(t)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    head_nodes = [n for n in model.graph.node if n.name == "lm_head" or n.name.startswith("lm_head/")]
    reads = {i for n in head_nodes for i in n.input}
    shared = counted.get("head", 0) == 0 and any(i.startswith("embed_tokens.") for i in reads)
    return split(counted, total, shared)
