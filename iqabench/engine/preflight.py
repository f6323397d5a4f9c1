"""Before any work: every file, package and dataset a run will need, and one table of all that is missing.

The runner plans the run inside :func:`iqabench.contracts.needs.collecting`, so each generator factory declares its
files instead of failing on the first; :func:`run_needs` adds each metric's files (pyiqa's table plus the
backbones) and the benchmark's (``Benchmark.needs(spec)``: GenEval's detector and mmdetection, fid-topk's
Inception, CLIP and reference set). :func:`ensure_present` then either downloads what is missing (online,
as diffusers and pyiqa do on first use), or raises :class:`MissingPiecesError` naming all of it with the
``iqabench fetch`` command that provides it. No model is built here: only files are looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..contracts.generators import WeightsMissingError
from ..contracts.needs import Need, unique
from ..contracts.specs import RunSpec
from ..metrics import MetricUnavailableError, metric_needs, offline_mode

#: What the table suggests when the caller (the CLI) does not supply the exact command.
DEFAULT_FETCH_HINT = "iqabench fetch <the same arguments as this run>"


class MissingPiecesError(WeightsMissingError, MetricUnavailableError):
    """Some of what a run needs is missing; ``missing`` holds all of it (the CLI prints it as one table)."""

    def __init__(self, missing: list[Need], fetch_hint: str = DEFAULT_FETCH_HINT, network: str | None = None):
        self.missing = missing
        self.fetch_hint = fetch_hint
        self.network = network
        super().__init__(self.summary() + "\n" + "\n".join(f"  - {line}" for line in describe(missing)))

    def summary(self) -> str:
        fetchable = [n for n in self.missing if n.fetchable]
        text = f"{len(self.missing)} piece(s) this run needs are missing, so nothing was generated"
        if self.network:
            text += f"; {self.network}"
        if fetchable:
            text += f"; `{self.fetch_hint}` downloads {len(fetchable)} of them (on a connected machine)"
        manual = [n for n in self.missing if not n.fetchable]
        if manual:
            text += f"; {len(manual)} must be provided by hand"
        return text


def describe(needs: Iterable[Need]) -> list[str]:
    """One line per need: what, where it goes, where it comes from."""
    return [f"{n.what}: {n.destination} (from {n.source})" for n in needs]


def run_needs(benchmark: Any, spec: RunSpec, metrics: Iterable[str], declared: Iterable[Need]) -> list[Need]:
    """The generators' declared needs, each metric's files and the benchmark's own needs, without repeats."""
    needs = list(declared)
    for name in metrics:
        needs += metric_needs(name)
    hook = getattr(benchmark, "needs", None)
    if callable(hook):
        needs += list(hook(spec))
    return unique(needs)


def ensure_present(needs: list[Need], *, log: Callable[[str], None] = lambda _: None,
                   fetch_hint: str = DEFAULT_FETCH_HINT, download: bool = True) -> bool:
    """Raise :class:`MissingPiecesError` unless everything is there; online, download what can be first.

    Returns True when something was downloaded (the caller re-plans so the generators see their files).
    ``download=False`` (several processes: they would race on the caches) only reports.
    ``HF_HUB_OFFLINE=1`` / ``IQABENCH_OFFLINE=1`` (``run --offline``) never touch the network; otherwise one
    short probe decides, so an unreachable network costs seconds and one sentence, not minutes of retries.
    """
    missing = [n for n in needs if not n.present]
    if not missing:
        return False
    fetchable = [n for n in missing if n.fetchable]
    if not download or offline_mode() or not fetchable or [n for n in missing if not n.fetchable]:
        raise MissingPiecesError(missing, fetch_hint)
    from .fetch import announced_size, fetch, unreachable

    reason = unreachable()
    if reason is not None:
        raise MissingPiecesError(missing, fetch_hint, network=f"{reason}, so nothing could be downloaded")
    log(f"first use: downloading {len(fetchable)} missing file(s){announced_size(fetchable)} (pass --offline to "
        "refuse instead)")
    failures = fetch(fetchable, log)
    if failures:
        raise MissingPiecesError(missing, fetch_hint, network="downloading failed: " + "; ".join(failures))
    return True


def as_rows(needs: Iterable[Need]) -> list[Mapping[str, str]]:
    """The table the CLI prints: what, size, destination, source (full paths and URLs: it wraps, never cuts)."""
    from .fetch import human_size

    return [{"what": n.what, "size": "" if n.kind == "package" or n.size is None else human_size(n.size),
             "destination": str(n.destination) if n.kind != "package" else "(Python package)",
             "source": n.source} for n in needs]
