"""Read back what a .pte holds, from its flatbuffer (no runtime): methods, operators, the
bytes the tq2 layers' constants take (`ternary_bits_per_weight`, shown by `bitexport inspect`),
the calls one `forward` makes (`calls_per_step`: every kernel and delegate call runs once per call
of the method, so at n = 1 it is the dispatch count per decoded token), and the file alignment of
the tq2 weights.

Only the flatbuffer head of the file is read (the extended header gives its size), not the
weight segments, so this is quick on a file of hundreds of megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TQ2_OP = "bitexport::tq2_linear"

# bytes per element of the ExecuTorch scalar types a constant can have here
_ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}


@dataclass
class PteSummary:
    methods: list[str]
    operators: list[str]  # "ns::name.overload" of the forward method's kernel calls
    delegates: list[str]  # backend ids of the forward method's delegates
    tq2_layers: int = 0
    tq2_weights: int = 0  # N * K summed over tq2 calls
    tq2_constant_bytes: int = 0  # packed weights + per-row scales
    constant_values: dict = field(default_factory=dict)  # constant method -> value
    kernel_calls: int = 0  # KernelCall instructions of forward (portable / custom kernels)
    delegate_calls: int = 0  # DelegateCall instructions of forward (XNNPACK partitions)
    calls_by_operator: dict = field(default_factory=dict)  # operator -> KernelCalls of forward
    # the largest power of two (up to 4096) dividing the file offset of every tq2 packed weight;
    # None when it cannot be read (no tq2 op, or constants inside the flatbuffer)
    tq2_weight_alignment: int | None = None

    @property
    def calls_per_step(self) -> int:
        return self.kernel_calls + self.delegate_calls

    def ops_per_token(self) -> dict:
        """The dispatch counts as the bench and the manifest report them."""
        return {"total": self.calls_per_step, "kernel_calls": self.kernel_calls,
                "delegate_calls": self.delegate_calls, "by_operator": dict(sorted(self.calls_by_operator.items()))}

    @property
    def ternary_bits_per_weight(self) -> float | None:
        return 8.0 * self.tq2_constant_bytes / self.tq2_weights if self.tq2_weights else None


def _read_program(path: Path):
    """(program, the file offset where segments start, or None without an extended header)."""
    from executorch.exir._serialize._program import (  # private: the only flatbuffer reader
        _flatbuffer_to_program,
        _get_extended_header,
    )

    with open(path, "rb") as fh:
        head = fh.read(64)
        eh = _get_extended_header(head)
        valid = eh is not None and eh.is_valid()
        size = eh.program_size if valid else None
        fh.seek(0)
        data = fh.read(size) if size else fh.read()
    return _flatbuffer_to_program(data), (eh.segment_base_offset if valid else None)


def _alignment(offset: int, cap: int = 4096) -> int:
    a = 1
    while a < cap and offset % (2 * a) == 0:
        a *= 2
    return a


def _constant_file_offset(program, base: int | None, data_buffer_idx: int) -> int | None:
    """Where constant `data_buffer_idx` starts in the file (constants in a segment only)."""
    cs = program.constant_segment
    if base is None or cs is None or not cs.offsets or data_buffer_idx >= len(cs.offsets):
        return None
    return base + program.segments[cs.segment_index].offset + cs.offsets[data_buffer_idx]


def _nbytes(t) -> int:
    n = 1
    for s in t.sizes:
        n *= s
    return n * _ELEMENT_BYTES.get(int(t.scalar_type), 4)


def _scalar(v):
    for attr in ("int_val", "bool_val", "double_val", "string_val"):
        if hasattr(v, attr):
            return getattr(v, attr)
    return None


def summarize_pte(path: str | Path) -> PteSummary:
    from executorch.exir.schema import DelegateCall, Int, KernelCall, Tensor

    program, segment_base = _read_program(Path(path))
    plans = {p.name: p for p in program.execution_plan}
    summary = PteSummary(methods=sorted(plans), operators=[], delegates=[])
    for name, plan in plans.items():
        if name == "forward":
            continue
        # a constant method's outputs are values stored in the plan
        summary.constant_values[name] = [_scalar(plan.values[i].val) for i in plan.outputs]
    fwd = plans.get("forward")
    if fwd is None:
        return summary
    summary.operators = sorted({f"{op.name}.{op.overload}" if op.overload else op.name for op in fwd.operators})
    summary.delegates = [d.id for d in fwd.delegates]
    seen: set[int] = set()
    alignments: list[int] = []
    for chain in fwd.chains:
        for ins in chain.instructions:
            call = ins.instr_args
            if isinstance(call, DelegateCall):
                summary.delegate_calls += 1
                continue
            if not isinstance(call, KernelCall):
                continue  # moves and frees: bookkeeping, no kernel
            op = fwd.operators[call.op_index]
            summary.kernel_calls += 1
            key = f"{op.name}.{op.overload}" if op.overload else op.name
            summary.calls_by_operator[key] = summary.calls_by_operator.get(key, 0) + 1
            if op.name != TQ2_OP:
                continue
            x, packed, scale, n_out = (fwd.values[i].val for i in call.args[:4])
            if not (isinstance(x, Tensor) and isinstance(packed, Tensor) and isinstance(n_out, Int)):
                continue
            summary.tq2_layers += 1
            summary.tq2_weights += n_out.int_val * x.sizes[-1]
            for idx, t in ((call.args[1], packed), (call.args[2], scale)):
                # constants live in the data buffers (index > 0), never in planned memory
                if idx not in seen and isinstance(t, Tensor) and t.data_buffer_idx > 0 and t.allocation_info is None:
                    seen.add(idx)
                    summary.tq2_constant_bytes += _nbytes(t)
            if isinstance(packed, Tensor) and packed.data_buffer_idx > 0:
                offset = _constant_file_offset(program, segment_base, packed.data_buffer_idx)
                if offset is not None:
                    alignments.append(_alignment(offset))
    summary.tq2_weight_alignment = min(alignments) if alignments else None
    return summary


EMBEDDING_OPS = ("aten::embedding", "quantized_decomposed::embedding_byte", "quantized_decomposed::embedding_4bit")


def _xnnpack_constants(raw: bytes, program, segment_base: int, plan) -> list[tuple[list[int], int]]:
    """(dims, bytes) of every constant tensor the forward method's XNNPACK delegates hold, scales
    counted with their weight, read from the delegates' own flatbuffers (decompiled with the flatc
    that ExecuTorch ships); constants in the named-data segments are sized from their entries."""
    import json
    import tempfile

    import executorch.backends.xnnpack.serialization as xnn_serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    schema = str(Path(list(xnn_serialization.__path__)[0]) / "schema.fbs")
    out = []
    seen: set = set()  # a constant two delegates (or two values) share is stored, and counted, once
    for di, d in enumerate(plan.delegates):
        if d.id != "XnnpackBackend":
            continue
        seg = program.segments[d.processed.index]
        blob = raw[segment_base + seg.offset: segment_base + seg.offset + seg.size]
        h = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
        with tempfile.TemporaryDirectory() as td:
            (Path(td) / "g.bin").write_bytes(blob[h.flatbuffer_offset: h.flatbuffer_offset + h.flatbuffer_size])
            _flatc_decompile(td, schema, str(Path(td) / "g.bin"))
            graph = json.loads((Path(td) / "g.json").read_text())
        consts = graph.get("constant_data", [])
        sizes = [int(c.get("size", 0)) for c in consts]

        def once(i: int) -> int:
            key = consts[i].get("named_key") or (di, i)
            if key in seen:
                return 0
            seen.add(key)
            return sizes[i]

        for v in graph.get("xvalues", []):
            u = v.get("xvalue_union", {})
            t = u.get("tensor_value", u)
            idx = int(t.get("constant_buffer_idx", 0) or 0)
            if not idx:
                continue
            n = once(idx) if idx < len(sizes) else 0
            q = u.get("quant_params") or {}
            sidx = int(q.get("scale_buffer_idx", 0) or 0)
            if sidx and sidx < len(sizes):
                n += once(sidx)
            out.append(([int(x) for x in t.get("dims", [])], n))
    return out


def component_bytes(path: str | Path, vocab_size: int, hidden_size: int) -> dict:
    """The .pte's bytes by component (targets/components.py).

    Constants outside delegates: the tq2 operator's arguments are ternary, the embedding
    operators' are the embedding, other rank-1 tensors are norm weights. Inside XNNPACK: the last
    [vocab, hidden] weight is the head (the head is the last linear), other rank-1 tensors norms,
    the rest ternary (the linears of --weights int4|fp32). The file's total is its size."""
    from executorch.exir.schema import KernelCall, Tensor

    from bitexport.targets.components import split

    path = Path(path)
    raw = path.read_bytes()
    program, segment_base = _read_program(path)
    base = segment_base or 0
    fwd = next(p for p in program.execution_plan if p.name == "forward")
    counted: dict[str, int] = {}
    owner: dict[int, str] = {}

    def add(component: str, n: int) -> None:
        counted[component] = counted.get(component, 0) + n

    for chain in fwd.chains:
        for ins in chain.instructions:
            call = ins.instr_args
            if not isinstance(call, KernelCall):
                continue
            name = fwd.operators[call.op_index].name
            role = "ternary" if name == TQ2_OP else "embedding" if name in EMBEDDING_OPS else None
            if role:
                for i in call.args:
                    owner.setdefault(i, role)
    for i, v in enumerate(fwd.values):
        t = v.val
        if isinstance(t, Tensor) and t.data_buffer_idx > 0 and t.allocation_info is None:
            add(owner.get(i) or ("norms" if len(t.sizes) == 1 else "other"), _nbytes(t))
    xnn = _xnnpack_constants(raw, program, base, fwd)
    head_at = max((k for k, (dims, _) in enumerate(xnn) if dims == [vocab_size, hidden_size]), default=None)
    for k, (dims, n) in enumerate(xnn):
        add("head" if k == head_at else "norms" if len(dims) == 1 else "ternary", n)
    return split(counted, len(raw))
