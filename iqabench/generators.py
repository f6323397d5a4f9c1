"""The generator protocol and how spec strings become generator objects.

Implementations live in ``adapters/`` (import name ``iqabench.adapters``). A
registered factory takes ``(spec: GeneratorSpec, runtime: Runtime)`` and returns
a :class:`Generator`. Factories must be cheap: they validate options and check
that weights exist (failing with one sentence when they do not) but load
nothing heavy; models load on the first ``generate`` call, so a ``--dry-run``
or a fully cached run never touches a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from .registry import GENERATORS
from .runtime import Runtime
from .specs import GeneratorSpec


class WeightsMissingError(RuntimeError):
    """Model weights are not available locally and cannot be downloaded. The message is one sentence."""


@dataclass(frozen=True)
class WorkItem:
    """One image to make: the same item always makes the same image."""

    prompt_id: str
    prompt: str
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def key_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "seed": int(self.seed), "params": dict(sorted(self.params.items()))}


@runtime_checkable
class Generator(Protocol):
    name: str

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes pixels (weights id, scheduler, steps, cfg, dtype); keys the image cache."""

    def baseline(self) -> str | None:
        """Spec of the model this generator is compared against, or None."""

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, each independent of what else is in the batch."""


def register_generator(name: str, *, description: str = "", weights=None, overwrite: bool = False):
    """Decorator registering ``factory(spec: GeneratorSpec, runtime: Runtime) -> Generator``."""
    return GENERATORS.register(name, description=description, weights=weights, overwrite=overwrite)


def build_generator(spec: str | GeneratorSpec, runtime: Runtime | None = None) -> Generator:
    from . import safe_load

    safe_load.install()  # whatever the generator later reads from a cache is read as tensors only
    parsed = GeneratorSpec.parse(spec) if isinstance(spec, str) else spec
    runtime = runtime or Runtime()
    entry = GENERATORS.get(parsed.family)
    generator = entry.factory(parsed, runtime)
    generator.name = str(parsed)
    return generator
