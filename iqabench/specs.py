"""Spec strings and the RunSpec that describes one benchmark run.

A generator spec is ``family[:variant][[key=value,...]]``, e.g. ``sdxl``,
``iqa-adapter:topiq``, ``tiny-sd[guidance_scale=1.0]``,
``guidance:topiq_nr[alpha=30,variant=x0]``. Options are parsed as JSON scalars
when they look like one (numbers, true/false/null) and kept as strings
otherwise, so the same spec always produces the same canonical string and
therefore the same cache keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

_SPEC_RE = re.compile(r"^(?P<family>[A-Za-z0-9_.\-]+)(?::(?P<variant>[^\[\]]+))?(?:\[(?P<options>.*)\])?$")


class SpecError(ValueError):
    """A spec string that cannot be parsed."""


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass(frozen=True)
class GeneratorSpec:
    family: str
    variant: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> GeneratorSpec:
        if isinstance(text, GeneratorSpec):
            return text
        match = _SPEC_RE.match(text.strip())
        if not match:
            raise SpecError(
                f"cannot parse generator spec {text!r}: expected family[:variant][key=value,...], "
                "e.g. 'tiny-sd' or 'tiny-sd[guidance_scale=1.0]'"
            )
        options: dict[str, Any] = {}
        raw = match.group("options")
        if raw:
            for part in raw.split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise SpecError(f"option {part!r} in spec {text!r} is not of the form key=value")
                key, value = part.split("=", 1)
                options[key.strip()] = _parse_value(value)
        return cls(match.group("family"), match.group("variant"), tuple(sorted(options.items())))

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def with_options(self, **updates: Any) -> GeneratorSpec:
        merged = self.options_dict | updates
        return GeneratorSpec(self.family, self.variant, tuple(sorted(merged.items())))

    def __str__(self) -> str:
        text = self.family + (f":{self.variant}" if self.variant else "")
        if self.options:
            text += "[" + ",".join(f"{k}={_format_value(v)}" for k, v in self.options) + "]"
        return text


def parse_seeds(text: str | int | list[int]) -> list[int]:
    """``"0-3"`` -> [0, 1, 2, 3]; ``"0,5,7"`` -> [0, 5, 7]; ``"0-1,10"`` -> [0, 1, 10]."""
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        return [int(s) for s in text]
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = (int(x) for x in part.split("-"))
            if hi < lo:
                raise SpecError(f"seed range {part!r} runs backwards")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            seeds.append(int(part))
        else:
            raise SpecError(f"cannot parse seeds {text!r}: use e.g. '0-3' or '0,5,7'")
    if not seeds:
        raise SpecError("no seeds given")
    return list(dict.fromkeys(seeds))


@dataclass
class RunSpec:
    """Everything a run needs; stored verbatim in ``runs/<id>/run.json``."""

    benchmark: str
    generators: list[str]
    metrics: list[str] = field(default_factory=lambda: ["piqe", "entropy"])
    prompts: str = "smoke"
    seeds: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None
    baseline: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 4
    plugins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)
