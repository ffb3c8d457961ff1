"""The one interface every target (executorch, coreml, onnx) implements.

A target turns a LoadedModel into artifacts in a folder (`emit`), and, where this machine can run
them, gives a Runner for an artifact of a bundle. `bitexport export/run/verify/bench` use only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bitexport.bundle import Artifact, Bundle
from bitexport.load import LoadedModel
from bitexport.runners.base import Runner


@dataclass(frozen=True)
class ExportOptions:
    weights: str | None = None  # ternary-layer format; None: the target's default
    max_seq_len: int | None = None  # KV-cache length; None: the loader's default (after load: always set)
    head: str = "int4"  # output head: "int4" (groupwise) or "fp32"
    embedding: str = "fp32"  # embedding table format
    extra: dict = field(default_factory=dict)  # target-specific switches


class Target(Protocol):
    name: str
    weights: tuple[str, ...]  # accepted --weights values; the first is the default

    def check(self, model: LoadedModel, options: ExportOptions) -> None:
        """Raise TargetError/InputError for anything `emit` would fail on, before files are written."""

    def emit(self, model: LoadedModel, options: ExportOptions, folder: Path) -> list[Artifact]:
        """Write this target's artifacts into `folder`; paths in the result are relative to it."""

    def runner(self, bundle: Bundle, artifact: Artifact) -> Runner | None:
        """A runner for `artifact` on this machine, or None where it cannot run here."""

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        """Static checks of the artifact that need no runtime; one line per problem found."""
