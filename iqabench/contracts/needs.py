"""Files a run needs, declared where they are looked for, collected while a run is planned.

A generator factory, a metric's weight table and a benchmark each know which files
their loader will read. Instead of raising at the first missing one (one error per
attempt, then the next), they *declare* a :class:`Need`; while :func:`collecting` is
active the declarations are gathered and planning goes on, so the preflight
(:mod:`iqabench.engine.preflight`) can name every missing piece in one table and ``iqabench
fetch`` can download them. Outside :func:`collecting` a missing need raises
:class:`~iqabench.contracts.generators.WeightsMissingError` with its one sentence, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .generators import WeightsMissingError

#: How a need is provided: a Hugging Face repo (a snapshot restricted to what the loader loads, or one file),
#: a plain URL (pyiqa's, torch hub's, CLIP's, torch-fidelity's), the IQA-Adapter release on Google Drive, a Python
#: package, or by hand (a local folder the user named).
KINDS = ("hub-snapshot", "hub-file", "url", "gdrive", "package", "manual")


@dataclass(frozen=True)
class Need:
    """One file (or hub snapshot, or package) a run will load, where its loader looks, and where it comes from."""

    what: str
    destination: Path
    kind: str
    source: str  # hub repo id, URL, Google Drive file id / release name, pip requirement, or a sentence
    present: bool
    size: int | None = None
    sha256: str | None = None
    filename: str | None = None  # hub-file: the file in the repo; gdrive: the release's file name
    revision: str | None = None
    variant: str | None = None  # hub-snapshot: the weights variant the loader picks (fp16, ...)
    message: str = ""  # the one sentence raised outside collecting()
    files: tuple[str, ...] = field(default=())  # hub-snapshot: the files of a present snapshot the loader reads

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown need kind {self.kind!r}: one of {', '.join(KINDS)}")

    @property
    def fetchable(self) -> bool:
        """Can ``iqabench fetch`` provide it (a package or a user's own folder it cannot)."""
        return self.kind in ("hub-snapshot", "hub-file", "url", "gdrive")

    def key(self) -> tuple[str, str, str | None]:
        return (self.kind, str(self.destination), self.filename)


_COLLECTOR: contextvars.ContextVar[list[Need] | None] = contextvars.ContextVar("iqabench_needs", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[Need]]:
    """Gather every :func:`declare` made inside; missing needs do not raise meanwhile."""
    gathered: list[Need] = []
    token = _COLLECTOR.set(gathered)
    try:
        yield gathered
    finally:
        _COLLECTOR.reset(token)


def is_collecting() -> bool:
    return _COLLECTOR.get() is not None


def declare(need: Need) -> bool:
    """Record ``need``; returns whether it is present. Outside :func:`collecting`, a missing need raises its
    sentence (a caller that gets ``False`` is collecting and goes on with a placeholder)."""
    gathered = _COLLECTOR.get()
    if gathered is None:
        if not need.present:
            raise WeightsMissingError(need.message or f"{need.what} is missing from {need.destination}")
        return True
    if need.key() not in {n.key() for n in gathered}:
        gathered.append(need)
    return need.present


def unique(needs: list[Need]) -> list[Need]:
    """``needs`` without repeats (two metrics sharing a backbone need it once), order kept."""
    seen: dict[tuple[str, str, str | None], Need] = {}
    for need in needs:
        seen.setdefault(need.key(), need)
    return list(seen.values())


#: The files ``open_clip`` tries in a pretrained tag's hub repository, in its order (safetensors first).
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def open_clip_needs(arch: str, pretrained: str) -> list[Need]:
    """The file ``open_clip.create_model(arch, pretrained=tag)`` reads from the Hugging Face cache, as a need.

    One place for every open_clip user (GenEval's colours, fid-topk's CLIP scores, ACPO's IPCE evaluator), so
    ``fetch`` and the preflight name the same file the loader opens. A tag open_clip fetches from a plain URL
    (no ``hf_hub``) is left to open_clip itself.
    """
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    from ..io.hub_files import hub_cache_dir

    repo = str(open_clip.get_pretrained_cfg(arch, pretrained).get("hf_hub", "")).rstrip("/")
    if not repo:
        return []
    what = f"CLIP {arch}/{pretrained}"
    for name in OPEN_CLIP_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=hub_cache_dir())
        if isinstance(found, str):
            return [Need(what, Path(found), "hub-file", repo, True, size=Path(found).stat().st_size, filename=name)]
    folder = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    return [Need(what, folder / OPEN_CLIP_FILES[0], "hub-file", repo, False, filename=OPEN_CLIP_FILES[0],
                 message=f"{what} is not in the hub cache ({repo})")]
