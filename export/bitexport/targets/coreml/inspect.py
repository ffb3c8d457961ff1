"""Read a saved .mlpackage without Core ML's runtime: its linears' weights and their byte cost.

Works from the model spec (protobuf) and the weight file, so it runs on Linux and checks what
was written, not what the converter meant to write. Each blob in `weights/weight.bin` starts with
a 64-byte header: sentinel 0xDEADBEEF (uint32), MIL dtype (uint32), size in bytes (uint64), data
offset (uint64); a const op's value points at that header by offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOB_SENTINEL = 0xDEADBEEF


@dataclass
class LinearWeight:
    linear: str  # name of the linear op
    source: str  # name of the op producing its weight
    kind: str  # "const" (dense) or a constexpr op type
    shape: tuple[int, ...]
    blob_bytes: int  # bytes of weight data this weight costs in the weight file
    input_kinds: dict[str, str] = field(default_factory=dict)  # constexpr input -> MIL dtype name

    @property
    def bits_per_weight(self) -> float:
        n = 1
        for d in self.shape:
            n *= d
        return 8.0 * self.blob_bytes / n


@dataclass
class PackageSummary:
    spec: object
    inputs: dict[str, tuple[str, list[int]]]  # name -> (dtype, shape or upper bounds)
    outputs: dict[str, str]
    states: dict[str, tuple[str, list[int]]]
    metadata: dict[str, str]
    linears: list[LinearWeight]
    float_consts: dict[str, tuple[int, ...]]  # every dense float const with >= 2 dims: name -> shape
    embedding: LinearWeight | None = None  # the table the first `gather` reads (linear = the gather op)
    norm_bytes: int = 0  # rank-1 consts named after a norm
    package_bytes: int = 0  # every file of the .mlpackage


def _blob_size(weights: bytes, offset: int) -> int:
    sentinel, _dtype, size, _data_offset = struct.unpack_from("<IIQQ", weights, offset)
    if sentinel != BLOB_SENTINEL:
        raise ValueError(f"no blob header at offset {offset} of the weight file")
    return size


# bits of one element of each MIL dtype a weight can be stored in
_DTYPE_BITS = {"FLOAT32": 32, "FLOAT16": 16, "BFLOAT16": 16, "INT8": 8, "UINT8": 8, "INT4": 4, "UINT4": 4,
               "UINT2": 2, "UINT1": 1, "UINT3": 3, "UINT6": 6, "INT16": 16, "UINT16": 16, "INT32": 32}


def _value_bytes(value, weights: bytes) -> int:
    """Bytes of a value's data: its blob's size, or for a small value kept inline in the spec
    (a 4-entry LUT, say), its elements times their width."""
    if value.WhichOneof("value") == "blobFileValue":
        return _blob_size(weights, value.blobFileValue.offset)
    tt = value.type.tensorType
    n = 1
    for d in _shape(tt):
        n *= d
    return (n * _DTYPE_BITS[_dtype_name(tt.dataType)] + 7) // 8


def _shape(tensor_type) -> tuple[int, ...]:
    return tuple(int(d.constant.size) for d in tensor_type.dimensions)


def _dtype_name(spec_dtype: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(spec_dtype)


def _feature(f) -> tuple[str, list[int]]:
    """(dtype, shape) of an input or output; a flexible dimension counts as its upper bound."""
    arr = f.type.multiArrayType
    ranges = arr.shapeRange.sizeRanges
    shape = [int(r.upperBound) for r in ranges] if ranges else [int(s) for s in arr.shape]
    return _array_dtype(arr.dataType), shape


def summarize(package: str | Path) -> PackageSummary:
    import coremltools as ct

    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    weights = (Path(model.weights_dir) / "weight.bin").read_bytes() if model.weights_dir else b""
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    producer = {out.name: op for op in ops for out in op.outputs}

    linears, float_consts, embedding, norm_bytes = [], {}, None, 0
    for op in ops:
        if op.type == "const":
            val = op.attributes["val"]
            tt = val.type.tensorType
            if tt.rank >= 2 and _dtype_name(tt.dataType) in ("FLOAT16", "FLOAT32"):
                float_consts[op.outputs[0].name] = _shape(tt)
            if tt.rank == 1 and "norm" in op.outputs[0].name and _dtype_name(tt.dataType) in ("FLOAT16", "FLOAT32"):
                norm_bytes += _value_bytes(val, weights)
        if op.type == "gather" and embedding is None:
            src = producer.get(op.inputs["x"].arguments[0].name)
            if src is not None and (src.type == "const" or src.type.startswith("constexpr_")):
                embedding = _weight(op, src, producer, weights)
            continue
        if op.type != "linear":
            continue
        src = producer[op.inputs["weight"].arguments[0].name]
        shape = _shape(src.outputs[0].type.tensorType)
        if src.type == "const":
            size = _value_bytes(src.attributes["val"], weights)
            kinds = {}
        else:
            size, kinds = 0, {}
            for name, arg in src.inputs.items():
                binding = arg.arguments[0]
                if binding.WhichOneof("binding") == "value":
                    size += _value_bytes(binding.value, weights)
                    kinds[name] = _dtype_name(binding.value.type.tensorType.dataType)
                else:  # an input fed by a const op
                    dep = producer[binding.name]
                    size += _value_bytes(dep.attributes["val"], weights)
                    kinds[name] = _dtype_name(dep.attributes["val"].type.tensorType.dataType)
        linears.append(LinearWeight(op.outputs[0].name, src.outputs[0].name, src.type, shape, size, kinds))

    desc = spec.description
    return PackageSummary(
        spec=spec,
        inputs={f.name: _feature(f) for f in desc.input},
        outputs={f.name: _feature(f)[0] for f in desc.output},
        states={
            s.name: (
                _array_dtype(s.type.stateType.arrayType.dataType),
                [int(d) for d in s.type.stateType.arrayType.shape],
            )
            for s in desc.state
        },
        metadata=dict(desc.metadata.userDefined),
        linears=linears,
        float_consts=float_consts,
        embedding=embedding,
        norm_bytes=norm_bytes,
        package_bytes=sum(p.stat().st_size for p in Path(package).rglob("*") if p.is_file()),
    )


def _weight(op, src, producer: dict, weights: bytes) -> LinearWeight:
    """The bytes and kind of the weight `src` (a const or constexpr op) that `op` reads."""
    shape = _shape(src.outputs[0].type.tensorType)
    if src.type == "const":
        return LinearWeight(op.outputs[0].name, src.outputs[0].name, "const", shape, _value_bytes(src.attributes["val"], weights))
    size, kinds = 0, {}
    for name, arg in src.inputs.items():
        binding = arg.arguments[0]
        value = binding.value if binding.WhichOneof("binding") == "value" else producer[binding.name].attributes["val"]
        size += _value_bytes(value, weights)
        kinds[name] = _dtype_name(value.type.tensorType.dataType)
    return LinearWeight(op.outputs[0].name, src.outputs[0].name, src.type, shape, size, kinds)


def component_bytes(summary: PackageSummary) -> dict:
    """The package's bytes by component (targets/components.py): ternary linears, the head (the
    last linear; 0 when it reads the embedding's table), the gather's table, norm weights; the
    rest of the package (program, metadata, RoPE tables, alignment) as other."""
    from bitexport.targets.components import split

    head = summary.linears[-1] if summary.linears else None
    emb = summary.embedding
    shared = head is not None and emb is not None and head.source == emb.source
    counted = {
        "ternary": sum(w.blob_bytes for w in summary.linears[:-1]),
        "head": 0 if shared or head is None else head.blob_bytes,
        "embedding": emb.blob_bytes if emb else 0,
        "norms": summary.norm_bytes,
    }
    return split(counted, summary.package_bytes, shared)


def _array_dtype(code: int) -> str:
    from coremltools.proto import FeatureTypes_pb2

    return FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(code)
