"""bitexport: take 1-bit and 1.58-bit (BitNet b1.58) language models from PyTorch to phones.

`bitexport.export(model, target, out, config=...)` writes a bundle (see api.py);
`bitexport.load_model(path)` reads a checkpoint into the reference decoder. Both are imported on
first use, so `import bitexport` stays light (the CLI reads only `__version__` before parsing).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"export": ("bitexport.api", "export"), "load_model": ("bitexport.formats", "load_model")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bitexport' has no attribute {name!r}")


__all__ = ["__version__", "export", "load_model"]
