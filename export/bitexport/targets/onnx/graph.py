"""A small ONNX graph builder: unique node names, shared constants, initializers by name.

The decoder graph is written by direct construction with `onnx.helper` so every node is ours and
the result can be checked node by node (the fast-path test walks it); this is the one place that
knows how names and constants are made.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Opset 23 is the first with RMSNormalization, which ORT 1.32 runs on CPU; it keeps the norms in the
# standard domain (ORT's SimplifiedLayerNormalization sits in the ONNX domain at version 1, which
# onnx.checker rejects as an unknown operator).
ONNX_OPSET = 23
MS_DOMAIN = "com.microsoft"


class Graph:
    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple, str] = {}
        self._count: dict[str, int] = {}

    def _unique(self, base: str) -> str:
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def init(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (the array is stored as given: dtype and shape are the tensor's)."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A shared small constant (scalar or 1-D list), one initializer per distinct value."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            tag = "_".join(str(v) for v in arr.reshape(-1)[:4]).replace("-", "m").replace(".", "p")
            self._consts[key] = self.init(f"const/{arr.dtype.name}/{tag}", arr)
        return self._consts[key]

    def node(
        self, op: str, inputs: list[str], name: str, n_out: int = 1, domain: str = "",
        outputs: list[str] | None = None, **attrs,
    ) -> list[str]:
        """Append a node; returns its output names (`outputs`, or `<name>/out<i>`). An input ''
        is an omitted optional."""
        name = self._unique(name)
        outs = list(outputs) if outputs else [f"{name}/out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def op(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        """Append a single-output node and return that output's name."""
        return self.node(op, inputs, name, 1, domain, **attrs)[0]

    def add_input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, name: str, elem_type: int, shape: list) -> None:
        """Declare a graph output; a node must produce a tensor of that name (no Identity copy: a
        copy of the present KV cache would cost a full cache copy per layer per step)."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, producer: str, version: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name=producer,
            producer_version=version,
        )
        # the lowest IR version that carries opset 23: onnx 1.23 would stamp its own newest one,
        # which runtimes older than the one we test with refuse to open
        model.ir_version = 11
        return model


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
