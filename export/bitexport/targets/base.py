"""The one interface every target (executorch, coreml, onnx) implements.

A target turns a LoadedModel into artifacts in a folder (`emit`) under its frozen config, checks
an artifact without a runtime (`verify`), and gives a Runner for an artifact where this machine can
run it. `bitexport export/run/verify/bench` use only this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bitexport.bundle.store import Artifact, Bundle
from bitexport.formats import LoadedModel
from bitexport.runtime.base import Runner
from bitexport.targets.config import TargetConfig


class Target(Protocol):
    name: str
    config_class: type[TargetConfig]

    def check(self, model: LoadedModel, config: TargetConfig) -> None:
        """Raise TargetError/InputError for anything `emit` would fail on, before files are written."""

    def emit(self, model: LoadedModel, config: TargetConfig, folder: Path) -> list[Artifact]:
        """Write this target's artifacts into `folder`; paths in the result are relative to it."""

    def runner(self, bundle: Bundle, artifact: Artifact) -> Runner:
        """A runner for `artifact`; raises EnvironmentProblem (naming the fix) where this machine
        cannot run it, so callers can skip with the reason."""

    def verify(self, bundle: Bundle, artifact: Artifact) -> list[str]:
        """Static checks of the artifact that need no runtime; one line per problem found."""
