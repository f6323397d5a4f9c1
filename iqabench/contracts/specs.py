"""Spec strings and the RunSpec that describes one benchmark run.

A generator spec is ``family[:variant][[key=value,...]]``, e.g. ``sdxl``,
``iqa-adapter:topiq``, ``tiny-sd[guidance_scale=1.0]``,
``guidance:topiq_nr[alpha=30,variant=x0]``. Options are parsed as JSON scalars
when they look like one (numbers, true/false/null) and kept as strings
otherwise, so the same spec always produces the same canonical string and
therefore the same cache keys.

Python's ``json.loads`` accepts ``NaN``, ``Infinity`` and ``1e999`` (which
overflows to inf); a ``guidance_scale=Infinity`` makes all-black images and a
``NaN`` one silently disables classifier-free guidance, so non-finite numbers
are refused here, where every spec option and ``--option`` value is parsed. A
key given twice (``tiny-sd[steps=2,steps=3]``) is refused rather than letting
the last one win.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import InitVar, asdict, dataclass, field
from typing import Any

from .errors import UserInputError

_SPEC_RE = re.compile(r"^(?P<family>[A-Za-z0-9_.\-]+)(?::(?P<variant>[^\[\]]+))?(?:\[(?P<options>.*)\])?$")


class SpecError(UserInputError):
    """A spec string that cannot be parsed."""


def _refuse_constant(name: str) -> Any:
    raise SpecError(f"{name} is not allowed as an option value: give a finite number")


def parse_value(text: str, *, key: str | None = None) -> Any:
    """A JSON scalar when the text is one (finite numbers, true/false/null), else the stripped text."""
    text = text.strip()
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except SpecError:
        where = f"option {key!r}" if key else "an option"
        raise SpecError(f"{where} is {text!r}: NaN and Infinity are not allowed, give a finite number") from None
    except json.JSONDecodeError:
        return text
    except ValueError:  # an integer of more than 4,300 digits (Python's int-from-string limit)
        where = f"option {key!r}" if key else "an option"
        raise SpecError(f"{where} is a number of {len(text)} characters: give a number of sensible size") from None
    if isinstance(value, float) and not math.isfinite(value):
        where = f"option {key!r}" if key else "an option"
        raise SpecError(f"{where} is {text!r}, which overflows to infinity: give a finite number")
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
                key = key.strip()
                if key in options:
                    raise SpecError(f"option {key!r} is given twice in spec {text!r}; keep one")
                options[key] = parse_value(value, key=key)
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


# torch.Generator.manual_seed takes any 64-bit value, but numpy and most samplers take 32 bits; a seed past
# that fails only inside generation (every image a failure), so it is refused here.
MAX_SEED = 2**32 - 1
DEFAULT_MAX_SEEDS = 10_000
MAX_SEEDS_ENV = "IQABENCH_MAX_SEEDS"


def env_positive_int(name: str, default: int, error: type[Exception]) -> int:
    """A limit an environment variable may raise (``IQABENCH_MAX_SEEDS``, the prompt-file limits): ``default``
    when unset, else a positive whole number, or ``error`` with one sentence naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise error(f"{name}={raw!r} is not a positive whole number")
    return int(raw)


#: The most seeds ``IQABENCH_MAX_SEEDS`` may allow: a run plans one item per prompt and seed, so 10**8 seeds
#: died with MemoryError while planning (even under --dry-run); 100,000 seeds is already 100,000 images per prompt.
MAX_SEEDS_CEILING = 100_000


def max_seeds() -> int:
    """How many seeds one run may ask for: 10,000 unless ``IQABENCH_MAX_SEEDS`` says otherwise (at most
    :data:`MAX_SEEDS_CEILING`)."""
    value = env_positive_int(MAX_SEEDS_ENV, DEFAULT_MAX_SEEDS, SpecError)
    if value > MAX_SEEDS_CEILING:
        raise SpecError(f"{MAX_SEEDS_ENV}={value} is above the most seeds one run can plan ({MAX_SEEDS_CEILING:,}); "
                        "split the seeds over several runs")
    return value


def parse_seeds(text: str | int | list[int], *, limit: int | None = None) -> list[int]:
    """``"0-3"`` -> [0, 1, 2, 3]; ``"0,5,7"`` -> [0, 5, 7]; ``"0-1,10"`` -> [0, 1, 10].

    At most ``limit`` seeds (default :func:`max_seeds`): ``0-100000000`` would
    otherwise build a list until memory runs out. Ranges are measured before
    they are expanded.
    """
    limit = max_seeds() if limit is None else limit
    if isinstance(text, int):
        text = [text]
    seeds: list[int] = []
    parts = [str(s) for s in text] if isinstance(text, list) else str(text).split(",")
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = (int(x) for x in part.split("-"))
            if hi < lo:
                raise SpecError(f"seed range {part!r} runs backwards")
            _check_seed(hi)
            if hi - lo + 1 + len(seeds) > limit:
                raise _too_many_seeds(hi - lo + 1 + len(seeds), limit)
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            seeds.append(_check_seed(int(part)))
            if len(seeds) > limit:
                raise _too_many_seeds(len(seeds), limit)
        else:
            raise SpecError(f"cannot parse seeds {text!r}: use whole numbers from 0 to {MAX_SEED}, e.g. '0-3' or "
                            "'0,5,7'")
    if not seeds:
        raise SpecError("no seeds given")
    return list(dict.fromkeys(seeds))


def _check_seed(seed: int) -> int:
    if seed > MAX_SEED:
        raise SpecError(f"seed {seed} is too large: seeds go from 0 to {MAX_SEED} (2**32 - 1)")
    return seed


def _too_many_seeds(count: int, limit: int) -> SpecError:
    if count > MAX_SEEDS_CEILING:  # no override can allow it: do not suggest one that would be refused
        return SpecError(f"{count:,} seeds asked for, more than the limit of {limit:,} per run and more than any run "
                         f"can plan ({MAX_SEEDS_CEILING:,}, the most {MAX_SEEDS_ENV} allows); split the seeds over "
                         "several runs")
    return SpecError(f"{count:,} seeds asked for, more than the limit of {limit:,} per run; use fewer seeds or raise "
                     f"the limit with {MAX_SEEDS_ENV}={count}")


#: RunSpec.options keys older versions used for execution settings; they moved to
#: iqabench.contracts.execution.Execution.
SPEED_OPTIONS = ("compile", "attention_slicing", "channels_last", "fuse_qkv", "sdpa_backend", "auto_batch_size")


@dataclass
class RunSpec:
    """*What* a run computes; stored verbatim in ``runs/<id>/run.json`` and hashed into the run id.

    *How* it runs (device, batch size, fast paths, processes) is an
    :class:`iqabench.contracts.execution.Execution`, passed to the Runner beside the spec.
    ``RunSpec(..., device=..., batch_size=...)`` and speed flags in ``options``
    (how specs were written before the split, and how old ``run.json`` files
    read) are still accepted: they are kept apart as the execution the spec
    was written with (:meth:`execution_hint`), never in :meth:`to_dict`.
    """

    benchmark: str
    generators: list[str]
    metrics: list[str] = field(default_factory=lambda: ["piqe", "entropy"])
    prompts: str = "smoke"
    seeds: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None
    baseline: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: InitVar[str | None] = None
    dtype: str = "auto"
    batch_size: InitVar[int | str | None] = None
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self, device: str | None, batch_size: int | str | None) -> None:
        speed = {k: self.options[k] for k in SPEED_OPTIONS if k in self.options}
        if speed:
            self.options = {k: v for k, v in self.options.items() if k not in SPEED_OPTIONS}
        hint = {**speed, **({"device": device} if device is not None else {}),
                **({"batch_size": batch_size} if batch_size is not None else {})}
        object.__setattr__(self, "_execution_hint", hint)

    def execution_hint(self) -> Any:
        """The :class:`~iqabench.contracts.execution.Execution` given through the old spellings (defaults otherwise)."""
        from .execution import Execution

        hint = dict(self._execution_hint)
        return Execution.from_legacy(hint.pop("device", None), hint.pop("batch_size", None), hint)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**data)


# Read-only views of the init-only hint. Not dead code: ``dataclasses.replace(spec, ...)`` (seed_consistency, any
# plugin) re-reads every init argument by attribute, InitVars included, so without these a replaced spec would lose
# its device/batch-size hint (the class default None) or, with the attributes deleted, fail. New code reads
# ``ctx.runtime`` / the Execution.
RunSpec.device = property(lambda self: self._execution_hint.get("device", "auto"))  # type: ignore[assignment]
RunSpec.batch_size = property(lambda self: self._execution_hint.get("batch_size", 4))  # type: ignore[assignment]
