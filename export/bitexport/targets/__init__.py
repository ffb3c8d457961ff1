"""Target registry and the platform table (`android`, `ios`, `desktop` are lists of targets).

Each target is a package `bitexport.targets.<name>` whose `target` module registers its Target
with `@register` (imported on first use: each pulls in a heavy runtime) and whose `config` module
holds its frozen config (light: the CLI reads it to build its flags).
"""

from __future__ import annotations

import importlib

from bitexport.errors import TargetError
from bitexport.targets.config import TargetConfig

TARGETS = ("executorch", "coreml", "onnx")

# what `--target` accepts: a platform is the list of targets its bundle holds
PLATFORMS = {
    "android": ("executorch",),
    "ios": ("executorch", "coreml"),
    "desktop": ("onnx",),
    "executorch": ("executorch",),
    "coreml": ("coreml",),
    "onnx": ("onnx",),
}

_REGISTRY: dict = {}


def register(cls: type) -> type:
    """Class decorator: one instance of each target, found by its `name`."""
    _REGISTRY[cls.name] = cls()
    return cls


def _check_name(name: str) -> None:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(PLATFORMS)}")


def get_target(name: str):
    _check_name(name)
    if name not in _REGISTRY:
        importlib.import_module(f"bitexport.targets.{name}.target")
    return _REGISTRY[name]


def config_class(name: str) -> type[TargetConfig]:
    _check_name(name)
    module = importlib.import_module(f"bitexport.targets.{name}.config")
    (cls,) = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, TargetConfig) and c.target == name]
    return cls


def platform_targets(platform: str) -> tuple[str, ...]:
    if platform not in PLATFORMS:
        raise TargetError(f"unknown target {platform!r}; choose one of {', '.join(PLATFORMS)}")
    return PLATFORMS[platform]


def targets_for(platform: str) -> list:
    return [get_target(n) for n in platform_targets(platform)]


__all__ = ["PLATFORMS", "TARGETS", "TargetConfig", "config_class", "get_target", "platform_targets", "register", "targets_for"]
