"""Typed, validated option objects for generator families: dataclasses with a help text per field.

A generator family declares its spec options once, as a dataclass whose fields
carry their type, default and a one-line help (``option(...)``). The same class
gives the defaults the generator starts from, validates a spec's values with one
sentence per mistake, and documents the family in
``iqabench list generators --options``. Unknown names are refused by the
generator (with close-match suggestions), since a quality generator passes
every option it does not own to its base model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from .specs import SpecError

T = TypeVar("T", bound="Options")


def option(default: Any, help: str, *, choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with the help text (and allowed values) ``iqabench list generators --options`` shows."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str
    default: Any
    help: str


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every family's option dataclass. Subclasses validate in ``check`` (raise ValueError)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name} {value!r} is unknown: choose one of {', '.join(map(str, choices))}")
        self.check()

    def check(self) -> None:
        """Override point: cross-field and range checks; raise ValueError with one sentence."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Option name -> default, the generator's starting point (``None``: the pipeline's own default)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def parse(cls: type[T], values: Mapping[str, Any], where: str) -> T:
        """The typed options from a mapping holding (at least) this family's keys; bad values -> SpecError."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: {exc}") from exc

    @classmethod
    def describe(cls) -> list[OptionInfo]:
        # A plugin without ``from __future__ import annotations`` holds real types: show ``int``, not "<class 'int'>".
        return [OptionInfo(f.name, f.type.__name__ if isinstance(f.type, type) else str(f.type), f.default,
                           f.metadata.get("help", "")) for f in dataclasses.fields(cls)]
