"""What every target's options have in common: one frozen dataclass per target, validated once.

A field declared with `option(...)` carries its choices, its command-line help and its parser, so
`bitexport export` derives its flags from the configs (a new option is reachable from the CLI and
from Python the moment it is declared) and every target words its refusals the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from bitexport.errors import TargetError


def option(default: Any, *, help: str, choices: tuple | None = None, parse: Callable[[str], Any] = str) -> Any:
    """A config field with what the CLI and the validation need to know about it."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TargetConfig:
    """Base of the per-target configs; subclasses declare fields with `option` and may add
    cross-field rules in `validate`."""

    target: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise TargetError(
                    f"{flag(f.name)} {value} is not available for target {self.target}; "
                    f"choose one of {', '.join(map(str, choices))}"
                )
        self.validate()

    def validate(self) -> None:
        """Rules that involve more than one field (raise TargetError)."""

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
