"""Short, stable labels for generator specs in tables, figures, grids and exports.

A spec such as ``iqa-adapter:/data/ckpt/adA.safetensors[scale=0.5]`` is exact but unreadable as a row label,
and a local path in a paper's table leaks a user's directory layout. The label keeps what tells generators apart:

* a ``name=`` option, when the spec has one, is the label;
* a path target becomes its file stem: ``iqa-adapter:adA[scale=0.5]``;
* anything else stays as written (``tiny-sd[steps=8]``, ``sdxl``).

Labels are stable (a pure function of the spec) and unique within one set: :func:`generator_aliases` falls back
to the parent folder (``ckptA/adA``) and then to the full spec when two specs would read the same. The full spec
stays in the report's legend table (``Generators``), the CSVs and ``run.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath

_SPEC = re.compile(r"^(?P<family>[^:\[\]]+:)?(?P<target>[^\[]*)(?P<options>\[.*\])?$")
_PATH_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".json", ".yaml", ".yml")
_NAME = re.compile(r"(?:^|,)\s*name\s*=\s*([^,\]]+)")


def _looks_like_path(target: str) -> bool:
    """A local file or folder; a hub id (``org/name``: one slash, no leading ``/``, ``.`` or ``~``) is not."""
    return (target.startswith(("/", ".", "~")) or "\\" in target or target.count("/") > 1
            or target.lower().endswith(_PATH_SUFFIXES))


def _options_without_name(options: str) -> str:
    inner = [part for part in options[1:-1].split(",") if part.strip() and not part.strip().startswith("name=")]
    return f"[{','.join(inner)}]" if inner else ""


def generator_label(spec: object, parents: int = 0) -> str:
    """The short label of one spec (see the module docstring); ``parents`` keeps that many parent folders of a
    path target (how :func:`generator_aliases` separates two files of the same name)."""
    text = str(spec)
    match = _SPEC.match(text)
    if match is None:
        return text
    options = match.group("options") or ""
    named = _NAME.search(options[1:-1]) if options else None
    if named:
        return named.group(1).strip()
    family, target = match.group("family") or "", match.group("target")
    if not _looks_like_path(target):
        return text
    path = PurePath(target.replace("\\", "/"))
    stem = path.stem if path.suffix.lower() in _PATH_SUFFIXES else path.name
    kept = [p for p in path.parent.parts if p not in ("/", "")][-parents:] if parents else []
    return f"{family}{'/'.join([*kept, stem])}{_options_without_name(options) if options else ''}"


def generator_aliases(specs: Iterable[object]) -> dict[str, str]:
    """spec -> label for a set of specs, every label unique (more parent folders, else the spec itself)."""
    specs = [str(s) for s in dict.fromkeys(specs)]
    aliases = {s: generator_label(s) for s in specs}
    for parents in (1, 2, 3):
        clashes = {a for a in aliases.values() if list(aliases.values()).count(a) > 1}
        if not clashes:
            break
        aliases.update({s: generator_label(s, parents) for s, a in aliases.items() if a in clashes})
    counts: dict[str, int] = {}
    for alias in aliases.values():
        counts[alias] = counts.get(alias, 0) + 1
    return {s: (a if counts[a] == 1 else s) for s, a in aliases.items()}
