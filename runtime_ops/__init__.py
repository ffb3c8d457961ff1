"""bitexport runtime operators: the packed ternary linear ``bitexport::tq2_linear``.

* ``tq2_layout``: the tq2 packing (``pack_tq2`` / ``unpack_tq2``), stated again in
  ``csrc/tq2_layout.h``.
* ``ops``: operator schemas, PyTorch reference implementations, fake kernels (registered on
  import of this package).
* ``library``: ``load_kernels()`` builds (once, cached) and loads the C++ ExecuTorch kernels.
"""

from . import ops  # noqa: F401  (registers torch.ops.bitexport.*)
from .library import load_kernels
from .ops import tq2_linear, tq2_linear_reference
from .tq2_layout import bits_per_weight, pack_tq2, packed_shape, unpack_tq2

__all__ = [
    "bits_per_weight",
    "load_kernels",
    "pack_tq2",
    "packed_shape",
    "tq2_linear",
    "tq2_linear_reference",
    "unpack_tq2",
]
