"""Target registry and the platform table (`android`, `ios`, `desktop` are lists of targets)."""

from __future__ import annotations

import importlib
import importlib.util

from bitexport.errors import TargetError
from bitexport.targets.base import ExportOptions, Target

# target name -> module implementing it (imported on first use: each pulls in a heavy runtime)
TARGET_MODULES = {
    "executorch": "bitexport.targets.executorch",
    "coreml": "bitexport.targets.coreml",
    "onnx": "bitexport.targets.onnx",
}

# what `--target` accepts: a platform is the list of targets its bundle holds
PLATFORMS = {
    "android": ("executorch",),
    "ios": ("executorch", "coreml"),
    "desktop": ("onnx",),
    "executorch": ("executorch",),
    "coreml": ("coreml",),
    "onnx": ("onnx",),
}


def available_targets() -> list[str]:
    return [name for name, mod in TARGET_MODULES.items() if importlib.util.find_spec(mod) is not None]


def get_target(name: str) -> Target:
    if name not in TARGET_MODULES:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(PLATFORMS)}")
    try:
        module = importlib.import_module(TARGET_MODULES[name])
    except ModuleNotFoundError as e:
        if e.name != TARGET_MODULES[name]:
            raise
        raise TargetError(
            f"target {name!r} is not implemented in this version of bitexport yet; "
            f"available: {', '.join(available_targets()) or 'none (use `bitexport run MODEL` for the PyTorch reference)'}"
        ) from None
    return module.TARGET


def targets_for(platform: str) -> list[Target]:
    if platform not in PLATFORMS:
        raise TargetError(f"unknown target {platform!r}; choose one of {', '.join(PLATFORMS)}")
    return [get_target(n) for n in PLATFORMS[platform]]


__all__ = ["ExportOptions", "PLATFORMS", "Target", "get_target", "targets_for"]
