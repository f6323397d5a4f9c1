"""Typed, validated option objects for generator families: one dataclass field per option, declared once.

A generator family declares its spec options once, as a dataclass whose fields
carry everything the toolkit needs to know about an option (``option(...)``):
its type and default (the annotation and the field default), a one-line help,
its valid values (a :class:`Rule`: ``integer(1, 1000)``, ``number(0)``, ``text()``, ``flag()``; or ``choices``),
the pipeline argument it becomes (``pipeline_arg``), whether an item's params may
override it (``item_param``) and whether, and under which key, it enters the
generator's fingerprint (``fingerprint``). Everything that used to be written
beside the dataclass — a dict of defaults, an if/elif value check, a hand-written
fingerprint key list, a map to pipeline arguments — iterates over these fields
instead, so adding an option is adding one field:

* ``iqabench list generators --options`` lists the fields (:meth:`Options.describe`);
* a spec's values are checked by the field's rule when the generator is built,
  before any work (:func:`check_option`; one sentence, exit 2);
* :func:`fingerprint_values` gives the fingerprint entries, :func:`pipeline_arguments`
  the pipeline call's arguments.

Unknown names are refused by the generator (with close-match suggestions), since
a quality generator passes every option it does not own to its base model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import UserInputError
from .specs import SpecError

T = TypeVar("T", bound="Options")

#: The widest value a seed option may take (int64): torch's generators take it, JSON and SQLite keep it exact.
INT64_MAX = 2**63 - 1


# -- value rules ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
    """What values an option takes: a kind (``int``, ``number``, ``text``, ``bool``) and a range, at one glance.

    Calling the rule returns the normalised value (``guidance_scale=7`` -> 7.0, so two spellings of one setting
    give one fingerprint, hence one cache key) or raises :class:`ValueError`; :attr:`expected` is how the error
    sentence names what was expected.
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    nonempty: bool = False
    words: str = ""

    @property
    def expected(self) -> str:
        if self.words:
            return self.words
        if self.kind == "text":
            return "a non-empty string" if self.nonempty else "text"
        if self.kind == "bool":
            return "true or false"
        what = "an integer" if self.kind == "int" else "a finite number"
        if self.minimum is not None:
            what += f" >= {_number(self.minimum)}"
        return what if self.maximum is None else f"{what} and <= {_number(self.maximum)}"

    def __call__(self, value: Any) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(self.expected)
            return value
        if self.kind == "text":
            if not isinstance(value, str) or (self.nonempty and not value):
                raise ValueError(self.expected)
            return value
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "int" else (int, float)):
            raise ValueError(self.expected)
        if self.kind == "number":
            try:
                value = float(value)
            except OverflowError:  # an integer of hundreds of digits: no float holds it
                raise ValueError(self.expected) from None
            if not math.isfinite(value):
                raise ValueError(self.expected)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ValueError(self.expected)
        if self.multiple_of and value % self.multiple_of:
            raise ValueError(self.expected)
        return value


def _number(value: float) -> str:
    return "2**63 - 1" if value == INT64_MAX else f"{value:g}" if isinstance(value, float) else str(value)


def integer(minimum: int | None = None, maximum: int | None = None, *, multiple_of: int | None = None,
            words: str = "") -> Rule:
    """An integer (not a bool) within ``[minimum, maximum]``, optionally a multiple of ``multiple_of``."""
    return Rule("int", minimum, maximum, multiple_of, words=words)


def number(minimum: float | None = None, maximum: float | None = None, *, words: str = "") -> Rule:
    """A finite int or float within ``[minimum, maximum]``, normalised to float."""
    return Rule("number", minimum, maximum, words=words)


def text(*, nonempty: bool = False) -> Rule:
    """A string (``nonempty``: not ``""``)."""
    return Rule("text", nonempty=nonempty)


def flag() -> Rule:
    """``true`` or ``false`` (a JSON boolean in the spec, e.g. ``use_resolution_binning=false``)."""
    return Rule("bool")


# -- the field declaration -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OptionMeta:
    """What ``option(...)`` records on a field (``dataclasses.Field.metadata["iqabench"]``)."""

    help: str = ""
    choices: tuple[Any, ...] | None = None
    rule: Rule | None = None
    pipeline_arg: str | None = None
    per_prompt: bool = False
    item_param: bool = False
    fingerprint: str | None = None  # the fingerprint key ("": the option's name); None: not fingerprinted
    fingerprint_none: bool = False


def option(default: Any, help: str, *, choices: tuple[Any, ...] | None = None, rule: Rule | None = None,
           pipeline_arg: str | None = None, per_prompt: bool = False, item_param: bool = False,
           fingerprint: bool | str | None = None, fingerprint_none: bool = False) -> Any:
    """A dataclass field declaring one option completely.

    ``help`` and ``choices`` (or ``rule``: see :func:`integer`, :func:`number`, :func:`text`) are shown by
    ``iqabench list generators --options`` and checked when a spec is parsed into a generator.
    ``pipeline_arg``: the diffusers ``pipeline(...)`` argument the value is passed as when it is not None
    (``per_prompt``: as one copy per prompt, e.g. ``negative_prompt``). ``item_param``: an item's params may
    override it for its own pipeline call. ``fingerprint``: the value changes pixels, so it enters the image
    cache key (``True``: under the option's name, a string: under that key; by default, an option with a
    ``pipeline_arg`` does, since what reaches the pipeline changes pixels). A None value (the pipeline's own
    default) is left out of the fingerprint, so adding an option keeps every existing cache key;
    ``fingerprint_none`` keeps it in, as the options fingerprinted before issue 22 always did (their cached
    images keep their keys).
    """
    if fingerprint is None:
        fingerprint = pipeline_arg is not None
    key = fingerprint if isinstance(fingerprint, str) else "" if fingerprint else None  # "": the option's name
    meta = OptionMeta(help, choices, rule, pipeline_arg, per_prompt, item_param, key, fingerprint_none)
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "iqabench": meta})


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One declared option: its name, type (as listed), default and :class:`OptionMeta`."""

    name: str
    type: str
    default: Any
    meta: OptionMeta

    @property
    def fingerprint_key(self) -> str | None:
        key = self.meta.fingerprint
        return None if key is None else key or self.name


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    name: str
    type: str
    default: Any
    help: str
    valid: str = ""  # the valid values, from the rule or the choices ("" when the field declares neither)


def _type_name(f: dataclasses.Field) -> str:
    # A plugin without ``from __future__ import annotations`` holds real types: show ``int``, not "<class 'int'>".
    return f.type.__name__ if isinstance(f.type, type) else str(f.type)


@functools.cache
def option_fields(cls: type) -> dict[str, OptionField]:
    """Name -> :class:`OptionField` of an option dataclass, in declaration order (plain fields included).

    A subclass that redeclares a field to change its default or help (``steps: int = option(2, "few steps")``)
    keeps what the parent declared and it leaves unsaid (the rule, the pipeline argument, the fingerprint key):
    a preset's new default must not silently stop the option from reaching the pipeline or the cache key.
    """
    parents = [b for b in cls.__mro__[1:] if dataclasses.is_dataclass(b)]
    inherited = option_fields(parents[0]) if parents else {}
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("iqabench") or OptionMeta(f.metadata.get("help", ""), f.metadata.get("choices"))
        parent = inherited.get(f.name)
        if parent is not None and parent.meta is not meta:
            meta = _inherit(parent.meta, meta)
        out[f.name] = OptionField(f.name, _type_name(f), f.default, meta)
    return dict(out)


def _inherit(parent: OptionMeta, child: OptionMeta) -> OptionMeta:
    """``child``, with each attribute it leaves at OptionMeta's default taken from ``parent``."""
    blank = OptionMeta()
    values = {}
    for f in dataclasses.fields(OptionMeta):
        mine = getattr(child, f.name)
        values[f.name] = getattr(parent, f.name) if mine == getattr(blank, f.name) else mine
    return OptionMeta(**values)


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut short: an overflowing integer of 400 digits should not fill the error sentence."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"
    text = repr(value)
    return text if len(text) <= limit + 20 else f"{text[:limit]}...'"


def short_text(value: str, limit: int = 100) -> str:
    """``value``, its middle cut out when it is longer than ``limit`` (a spec holding a 400-digit number)."""
    return value if len(value) <= limit else f"{value[:limit - 30]}...{value[-20:]}"


def check_option(field: OptionField | None, name: str, value: Any, where: str) -> Any:
    """One value checked by its field's rule and normalised; None (the default) always passes.

    The sentence reads ``<where>: option steps=0 is invalid, expected an integer >= 1 and <= 1000``.
    ``field`` None: an option a plugin declared only by a default, passed through as it is.
    """
    if value is None or field is None or field.meta.rule is None:
        return value
    try:
        return field.meta.rule(value)
    except ValueError as exc:
        raise SpecError(f"{where}: option {name}={short_repr(value)} is invalid, expected {exc}") from None


def fingerprint_values(fields: Mapping[str, OptionField], values: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint entries of the fields that declare ``fingerprint``, read from ``values``."""
    out = {}
    for f in fields.values():
        key = f.fingerprint_key
        if key is None:
            continue
        value = values.get(f.name, f.default)
        if value is not None or f.meta.fingerprint_none:
            out[key] = value
    return out


def pipeline_arguments(fields: Mapping[str, OptionField], values: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """``pipeline(...)`` arguments of the fields that declare ``pipeline_arg``; None values are left to diffusers."""
    out: dict[str, Any] = {}
    for f in fields.values():
        value = values.get(f.name)
        if f.meta.pipeline_arg is not None and value is not None:
            out[f.meta.pipeline_arg] = [value] * batch if f.meta.per_prompt else value
    return out


# -- the base class -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every family's option dataclass. Subclasses add cross-field checks in ``check`` (raise ValueError)."""

    def __post_init__(self) -> None:
        for name, f in option_fields(type(self)).items():
            value = getattr(self, name)
            choices = f.meta.choices
            if choices and value not in choices:
                raise UserInputError(f"{name} {value!r} is unknown: choose one of {', '.join(map(str, choices))}")
            if f.meta.rule is not None and value is not None:
                try:
                    object.__setattr__(self, name, f.meta.rule(value))
                except ValueError as exc:
                    raise UserInputError(f"option {name}={short_repr(value)} is invalid, expected {exc}") from None
        self.check()

    def check(self) -> None:
        """Override point: cross-field and range checks; raise ValueError with one sentence."""

    @classmethod
    def defaults(cls, **overrides: Any) -> dict[str, Any]:
        """Option name -> default, the generator's starting point (``None``: the pipeline's own default).

        ``overrides`` are a preset's own defaults (``sdxl``: 35 steps); each must name a field.
        """
        values = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
        return {**values, **overrides}

    @classmethod
    def fields(cls) -> dict[str, OptionField]:
        """Name -> :class:`OptionField`: what listing, validation, fingerprint and the pipeline call iterate."""
        return dict(option_fields(cls))

    @classmethod
    def parse(cls: type[T], values: Mapping[str, Any], where: str) -> T:
        """The typed options from a mapping holding (at least) this family's keys; bad values -> SpecError."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpecError(f"{where}: {exc}") from exc

    @classmethod
    def describe(cls) -> list[OptionInfo]:
        """One row per field for ``iqabench list generators --options``, with the valid values it declares."""
        rows = []
        for f in option_fields(cls).values():
            rule, choices = f.meta.rule, f.meta.choices
            valid = rule.expected if rule is not None else " | ".join(map(str, choices)) if choices else ""
            rows.append(OptionInfo(f.name, f.type, f.default, f.meta.help, valid))
        return rows

