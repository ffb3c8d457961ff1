"""Read back what a .pte holds, from its flatbuffer (no runtime): methods, operators, and the
bytes the tq2 layers' constants take (`ternary_bits_per_weight`, shown by `bitexport inspect`).

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

    @property
    def ternary_bits_per_weight(self) -> float | None:
        return 8.0 * self.tq2_constant_bytes / self.tq2_weights if self.tq2_weights else None


def _read_program(path: Path):
    from executorch.exir._serialize._program import (  # private: the only flatbuffer reader
        _flatbuffer_to_program,
        _get_extended_header,
    )

    with open(path, "rb") as fh:
        head = fh.read(64)
        eh = _get_extended_header(head)
        size = eh.program_size if eh is not None and eh.is_valid() else None
        fh.seek(0)
        data = fh.read(size) if size else fh.read()
    return _flatbuffer_to_program(data)


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
    from executorch.exir.schema import Int, KernelCall, Tensor

    program = _read_program(Path(path))
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
    for chain in fwd.chains:
        for ins in chain.instructions:
            call = ins.instr_args
            if not isinstance(call, KernelCall) or fwd.operators[call.op_index].name != TQ2_OP:
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
    return summary
