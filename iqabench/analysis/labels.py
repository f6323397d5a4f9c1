"""Short, stable labels for generator specs in tables, figures, grids and exports.

A spec such as ``iqa-adapter:/data/ckpt/adA.safetensors[scale=0.5]`` is exact but unreadable as a row label,
and a local path in a paper's table leaks a user's directory layout. The label keeps what tells generators apart:

* a ``name=`` option, when the spec has one, is the label;
* a path target becomes its file stem: ``iqa-adapter:adA[scale=0.5]``;
* anything else stays as written (``tiny-sd[steps=8]``, ``sdxl``).

Labels are stable (a pure function of the spec) and unique within one set: :func:`generator_aliases` falls back
to the parent folder (``ckptA/adA``), then to a ``name=`` label with the options it hid (``mine[steps=2]``), then to
the full spec when two specs would read the same. The full spec stays in the report's legend table
(``Generators``), the CSVs and ``run.json``.

Every figure labels its generators through :func:`figure_labels`: one call over all the labels one figure shows
(axis ticks, legend entries, panel titles), so two generators never share a tick or a legend entry (matplotlib's
legend would silently keep only one of them), even after a label is cut to fit.
"""

from __future__ import annotations

import hashlib
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


def _named_with_options(spec: str) -> str:
    """A ``name=`` label with the spec's other options shown (``mine[steps=2]``): how two specs that share a name
    but differ in an option read apart; any other spec keeps its plain label."""
    label = generator_label(spec)
    match = _SPEC.match(spec)
    options = (match.group("options") or "") if match else ""
    if not options or not _NAME.search(options[1:-1]):
        return label
    return f"{label}{_options_without_name(options)}"


def _clashes(aliases: dict[str, str]) -> set[str]:
    seen: dict[str, int] = {}
    for alias in aliases.values():
        seen[alias] = seen.get(alias, 0) + 1
    return {a for a, n in seen.items() if n > 1}


def generator_aliases(specs: Iterable[object]) -> dict[str, str]:
    """spec -> label for a set of specs, every label unique: more parent folders, then a ``name=`` label with its
    hidden options, else the spec itself (a pure function of the set, so the same run always reads the same)."""
    specs = [str(s) for s in dict.fromkeys(str(s) for s in specs)]
    aliases = {s: generator_label(s) for s in specs}
    for parents in (1, 2, 3):
        clashes = _clashes(aliases)
        if not clashes:
            break
        aliases.update({s: generator_label(s, parents) for s, a in aliases.items() if a in clashes})
    clashes = _clashes(aliases)
    aliases.update({s: _named_with_options(s) for s, a in aliases.items() if a in clashes})
    while clashes := _clashes(aliases):  # the spec itself is unique; each pass turns at least one more into it
        aliases.update({s: s for s, a in aliases.items() if a in clashes})
    return aliases


def _cut_end(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


def _cut_middle(text: str, limit: int) -> str:
    """Head and tail kept: what tells two long labels apart is often at the end (an option, a file stem)."""
    if len(text) <= limit:
        return text
    tail = max(1, (limit - 1) // 2)
    return text[: max(1, limit - 1 - tail)].rstrip() + "…" + text[-tail:].lstrip()


def _cut_tagged(text: str, key: str, limit: int) -> str:
    """The label cut to leave room for ``#`` and 4 hex digits of the full text's hash: distinct and stable."""
    tag = "#" + hashlib.sha1(key.encode()).hexdigest()[:4]
    return _cut_end(text, max(1, limit - len(tag))) + tag


def figure_labels(texts: Iterable[object], limit: int | None = None, sep: str = " | ") -> dict[str, str]:
    """text -> label for everything one figure names (ticks, legend entries, titles), unique within the set.

    Each ``sep``-joined part (``generator | target``) is a generator spec labelled with :func:`generator_aliases`
    over all parts of the set; a label longer than ``limit`` is cut at its end with an ellipsis, and labels that
    the cut made equal are cut in the middle instead, then tagged with a short hash of their full text. Texts that
    are not specs (a metric, ``base``) come back as written (cut to ``limit``).
    """
    texts = list(dict.fromkeys(str(t) for t in texts))
    parts = {t: t.split(sep) for t in texts}
    aliases = generator_aliases(p for ps in parts.values() for p in ps)
    labels = {t: sep.join(aliases[p] for p in ps) for t, ps in parts.items()}
    while clashes := _clashes(labels):  # the parts' labels are unique; only a stray separator can join them
        labels.update({t: t for t, a in labels.items() if a in clashes})
    if limit is None:
        return labels
    cut = {t: _cut_end(a, limit) for t, a in labels.items()}
    for shorten in (lambda t: _cut_middle(labels[t], limit), lambda t: _cut_tagged(labels[t], t, limit)):
        clashes = _clashes(cut)
        if not clashes:
            break
        cut.update({t: shorten(t) for t, a in cut.items() if a in clashes})
    while clashes := _clashes(cut):  # a hash clash: the full text is the one label that cannot collide
        cut.update({t: t for t, a in cut.items() if a in clashes})
    return cut
