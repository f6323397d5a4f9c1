"""Render one or more saved runs into a single self-contained HTML file.

Self-contained means: it opens from disk with no server and loads nothing from
anywhere. CSS is inline, figures are inline SVG, thumbnails are base64 PNG data
URIs, and a Content-Security-Policy in the page forbids every other source, so
even a bug that let markup through could not fetch or run anything; the one
inline script (table sorting, optional) is allowed by its sha256 hash only.
Prompts and captions are untrusted text: Jinja2 autoescapes every value, and the
only values marked safe are the SVGs (checked for scripting on load) and the
script constant below.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import numbers
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup
from PIL import Image

from iqabench.execution.image_tensors import default_workers
from iqabench.io.templating import html_environment
from iqabench.store.atomic_io import atomic_write_text

from .headline import headline, headline_html, legend, relabel
from .persist import SavedResult, load_result
from .tables import MISSING, Cell, TableView, format_number, table_view

if TYPE_CHECKING:  # pragma: no cover
    from iqabench.contracts.results import ImageRef
    from iqabench.store.store import Store

THUMBNAIL_PX = 160
# Threads that make a page's thumbnails; None: as many as the scoring stage's decoder (default_workers()).
THUMBNAIL_WORKERS: int | None = None
# Image grids: the first rows show, the rest sit behind a "show all" toggle; past MAX_GRID_ROWS the page says how
# many rows it left out (thumbnails are inlined, so a paper-scale grid would make a page too big to open).
GRID_VISIBLE_ROWS = 8
MAX_GRID_ROWS = 200
# A note the runner puts first when a run used randomly initialised tiny models; lifted to the top of the page.
SMOKE_PREFIX = "Smoke run:"
# Rows of one table inlined in the HTML; longer tables (per-item tables of paper-scale runs) are cut, with a
# pointer to the full CSV next to the report, so the page stays small enough to open.
MAX_TABLE_ROWS = 2000
REPORT_FILE = "report.html"
# summary keys with a meaning of their own; every other numeric summary value is a headline number
N_IMAGES_KEY, FAILURES_KEY = "n_images", "failures"
_PLAN_COUNT_KEYS = ("n_unique_images", "n_images", "images", "items", "total")

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var buttons = table.querySelectorAll("thead button.sort");
  buttons.forEach(function (button, col) {
    button.addEventListener("click", function () {
      var asc = button.getAttribute("data-order") !== "asc";
      buttons.forEach(function (b) {
        b.removeAttribute("data-order");
        b.parentNode.removeAttribute("aria-sort");
      });
      button.setAttribute("data-order", asc ? "asc" : "desc");
      button.parentNode.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
        var nx = Number(x), ny = Number(y);
        var cmp = (x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


@dataclass
class Thumb:
    uri: str | None
    caption: str
    scores: list[tuple[str, str]]
    error: str | None = None


@dataclass
class GridView:
    name: str
    groups: list[str]
    rows: list[tuple[str, list[Thumb | None]]]  # the rows shown first
    more_rows: list[tuple[str, list[Thumb | None]]] = field(default_factory=list)  # behind "show all"
    total_rows: int = 0  # rows in the grid, including ones left out of the page

    @property
    def shown_rows(self) -> int:
        return len(self.rows) + len(self.more_rows)


@dataclass
class TableBlock:
    name: str
    view: TableView
    footnote: str = ""


@dataclass
class FigureBlock:
    name: str
    svg: Markup
    caption: str


@dataclass
class RunView:
    run_id: str
    benchmark: str
    status: str
    created: str
    generators: list[str]
    metrics: list[str]
    n_images: str
    summary: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    smoke: str | None = None
    headline: Markup | None = None
    headline_title: str = ""
    headline_notes: list[str] = field(default_factory=list)
    tables: list[TableBlock] = field(default_factory=list)
    figures: list[FigureBlock] = field(default_factory=list)
    grids: list[GridView] = field(default_factory=list)
    provenance: str = ""
    missing: str | None = None
    legend: list[tuple[str, str]] = field(default_factory=list)  # (short label, full spec) where they differ


class _Thumbnails:
    """Base64 PNG thumbnails, made once per image key per report (grids often repeat images).

    Decoding the cached PNGs is most of a report's fixed cost at full size (~25 ms per 1024 px image on one
    core: the bulk of the 0.53 s report stage of an 8-image SDXL run), and Pillow releases the GIL while it
    inflates, resizes and deflates, so :meth:`prefetch` makes a grid's thumbnails on a thread pool (as many
    workers as the scoring stage's decoder). Each thumbnail is made by the same code either way, so the page
    is byte-identical.
    """

    def __init__(self, store: Store, max_px: int = THUMBNAIL_PX):
        self.store, self.max_px, self._cache = store, max_px, {}

    def __call__(self, key: str) -> tuple[str | None, str | None]:
        if key not in self._cache:
            self._cache[key] = self._make(key)
        return self._cache[key]

    def prefetch(self, keys: list[str]) -> None:
        """Make the thumbnails of ``keys`` not made yet, in parallel; ``self(key)`` then only looks them up."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        workers = min(THUMBNAIL_WORKERS or default_workers(), len(todo))
        if workers < 2:
            return  # one image (or one CPU): a pool only adds its start-up
        with ThreadPoolExecutor(workers, thread_name_prefix="thumbnail") as pool:
            self._cache.update(zip(todo, pool.map(self._make, todo), strict=True))

    def _make(self, key: str) -> tuple[str | None, str | None]:
        try:
            image = self.store.load_image(key)
        except ValueError:
            return None, "invalid image key"
        except FileNotFoundError:
            return None, "image not in the cache"
        except (OSError, SyntaxError) as exc:  # a damaged PNG must not take the whole report down
            return None, (f"cached image is damaged ({type(exc).__name__}); "
                          "`iqabench store verify --repair` moves it aside")
        image.thumbnail((self.max_px, self.max_px), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None


def _grid_slots(refs: list[ImageRef]) -> tuple[list[str], dict[tuple[str, int], list[ImageRef | None]]]:
    """The grid's columns (groups) and its rows: (caption, occurrence) -> the ref in each column, or None."""
    groups = list(dict.fromkeys(ref.group for ref in refs))
    slots: dict[tuple[str, int], list[ImageRef | None]] = {}
    seen: dict[tuple[str, str], int] = {}
    for ref in refs:
        occurrence = seen.get((ref.group, ref.caption), 0)
        seen[(ref.group, ref.caption)] = occurrence + 1
        slots.setdefault((ref.caption, occurrence), [None] * len(groups))[groups.index(ref.group)] = ref
    return groups, slots


def _shown_keys(refs: list[ImageRef]) -> list[str]:
    """The image keys whose thumbnails the page shows (the first ``MAX_GRID_ROWS`` rows)."""
    rows = list(_grid_slots(refs)[1].values())[:MAX_GRID_ROWS]
    return [ref.image_key for cells in rows for ref in cells if ref is not None]


def _grid_view(name: str, refs: list[ImageRef], thumbs: Callable[[str], tuple[str | None, str | None]],
               labels: dict[str, str] | None = None) -> GridView:
    """Columns are ImageRef.group (order of first appearance); rows line up the same caption across groups.

    The first ``GRID_VISIBLE_ROWS`` rows show; rows up to ``MAX_GRID_ROWS`` sit behind a "show all" toggle;
    ``total_rows`` counts every row so the page can say "showing k of n".
    """
    groups, slots = _grid_slots(refs)
    rows = []
    for (caption, _), cells in list(slots.items())[:MAX_GRID_ROWS]:
        row: list[Thumb | None] = []
        for ref in cells:
            if ref is None:
                row.append(None)
                continue
            uri, error = thumbs(ref.image_key)
            scores = [(metric, format_number(value, trim=False)) for metric, value in ref.scores.items()]
            row.append(Thumb(uri, ref.caption, scores, error))
        rows.append((caption, row))
    groups = [(labels or {}).get(group, group) for group in groups]
    return GridView(name, groups, rows[:GRID_VISIBLE_ROWS], rows[GRID_VISIBLE_ROWS:], len(slots))


def _failures(value: Any) -> list[str]:
    if value is None or value == 0 or value == [] or value == {}:
        return []
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [f"{format_number(value)} item(s) failed (see the run's log for details)"]
    return [str(value)]


def _n_images(summary: dict[str, Any], manifest: dict[str, Any]) -> str:
    if summary.get(N_IMAGES_KEY) is not None:
        return format_number(summary[N_IMAGES_KEY])
    plan = manifest.get("plan")
    if isinstance(plan, dict):
        for key in _PLAN_COUNT_KEYS:
            if isinstance(plan.get(key), numbers.Real):
                return format_number(plan[key])
    return MISSING


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _summary_items(summary: dict[str, Any], labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Summary values as short text: numbers formatted, lists joined, mappings as ``key: value`` pairs.

    A mapping of numbers keyed ``"generator | metric"`` repeats the headline table, so it is left out when a
    headline exists (the caller passes only what remains).
    """
    labels = labels or {}

    def text_of(v: Any) -> str:
        if isinstance(v, bool):  # True/False read as yes/no on the page
            return "yes" if v else "no"
        return format_number(v) if _is_number(v) else labels.get(str(v), str(v))

    def key_of(k: Any) -> str:  # "spec | metric" keys name a generator first
        head, sep, tail = str(k).partition(" | ")
        return labels.get(head, head) + sep + tail

    items = []
    for key, value in summary.items():
        if key == FAILURES_KEY:
            continue
        if isinstance(value, dict):
            if not value:
                continue
            text = "; ".join(f"{key_of(k)}: {text_of(v)}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            text = ", ".join(text_of(v) for v in value) or MISSING
        else:
            text = text_of(value)
        items.append((key.replace("_", " "), text))
    return items


def _metrics_used(summary: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """The IQA metrics the run actually used: the benchmark's own list, else the ones the runner scored with.

    Not the spec's ``metrics``: it defaults to ``piqe,entropy`` even for benchmarks that score no IQA metric
    (GenEval), and a header listing metrics a run never used misleads.
    """
    for key in ("metrics", "metrics_used"):
        if isinstance(summary.get(key), list):
            return [str(m) for m in summary[key]]
    scored = manifest.get("metrics")
    if not isinstance(scored, dict):
        return []
    asked = [str(m) for m in (manifest.get("spec") or {}).get("metrics") or []]
    return [m for m in asked if m in scored] + sorted(str(m) for m in scored if m not in asked)  # spec order


def _figure_caption(name: str, caption: str) -> str:
    return caption or name.replace("_", " ")


def _run_view(store: Store, run_id: str, thumbs: _Thumbnails) -> RunView:
    run_json = store.run_dir(run_id) / "run.json"
    manifest = store.read_run_json(run_id) if run_json.is_file() else {}
    try:
        result: SavedResult | None = load_result(store, run_id)
    except FileNotFoundError:
        if not manifest:
            raise FileNotFoundError(
                f"run {run_id!r} has neither a run.json nor saved results under {store.run_dir(run_id)}"
            ) from None
        result = None
    spec = manifest.get("spec") or {}
    summary = result.summary if result else {}
    view = RunView(
        run_id=run_id,
        benchmark=(result.benchmark if result else "") or str(spec.get("benchmark", "")),
        status=str(manifest.get("status", "")),
        created=str(manifest.get("created") or manifest.get("updated") or ""),
        generators=[str(g) for g in spec.get("generators", [])],
        metrics=_metrics_used(summary, manifest),
        n_images=_n_images(summary, manifest),
        provenance=json.dumps(manifest, indent=2, sort_keys=True, default=str),
    )
    if result is None:
        view.missing = "This run has no saved results yet (was it analysed?)."
        return view
    labels = _run_aliases(view.generators, result)
    view.legend = [(alias, spec) for spec, alias in labels.items() if alias != spec]
    view.generators = [labels.get(g, g) for g in view.generators]
    head = headline(result)
    shown_summary = dict(summary)
    if head is not None:
        head = relabel(head, [labels.get(str(r), str(r)) for r in head.estimate.index])
        view.headline = Markup(headline_html(head, uuid=f"h-{run_id}"))
        columns = f" and {head.estimate.columns.name}" if head.estimate.columns.name else ""
        view.headline_title = f"{head.quantity} by {head.estimate.index.name or 'row'}{columns} " \
                              f"(from table {head.source})"
        view.headline_notes = [n for n in (legend(head), head.footnote) if n]
        # mappings of numbers repeat the headline table's estimates without their CIs
        shown_summary = {k: v for k, v in summary.items()
                         if not (isinstance(v, dict) and v and all(_is_number(x) for x in v.values()))}
    view.summary = _summary_items(shown_summary, labels)
    # the benchmark's own list wins; else what the runner recorded in run.json (image key -> "stage: detail")
    view.failures = _failures(summary.get(FAILURES_KEY)) or _failures(manifest.get(FAILURES_KEY))
    notes = [_with_labels(n, labels) for n in result.notes]  # the runner's notes name generators by full spec
    view.smoke = next((n for n in notes if n.startswith(SMOKE_PREFIX)), None)
    view.notes = [n for n in notes if n != view.smoke]
    view.tables = [TableBlock(name, table_view(frame, MAX_TABLE_ROWS, result.table(name), labels),
                              result.footnotes.get(name, ""))
                   for name, frame in result.tables.items()]
    view.figures = [FigureBlock(name, Markup(svg), _figure_caption(name, result.captions.get(name, "")))
                    for name, svg in result.figures.items()]
    thumbs.prefetch([key for refs in result.grids.values() for key in _shown_keys(refs)])  # all grids at once
    view.grids = [_grid_view(name, refs, thumbs, labels) for name, refs in result.grids.items()]
    return view


def _with_labels(text: str, labels: dict[str, str]) -> str:
    """``text`` with every full generator spec replaced by its short label (longest spec first)."""
    for spec, alias in sorted(labels.items(), key=lambda kv: -len(kv[0])):
        if spec != alias:
            text = text.replace(spec, alias)
    return text


def _run_aliases(generators: list[str], result: SavedResult) -> dict[str, str]:
    """Short labels (``iqabench.analysis.labels``) for the run's generators and every spec its tables and grids name."""
    from iqabench.analysis.labels import generator_aliases

    from .tables import frame_aliases

    specs = list(generators)
    for frame in result.tables.values():
        specs += list(frame_aliases(frame))
    specs += [ref.group for refs in result.grids.values() for ref in refs if ref.group]
    return generator_aliases(specs)


def _environment() -> jinja2.Environment:
    """The reports' environment (:func:`iqabench.io.templating.html_environment`: compiled templates are kept)."""
    return html_environment("iqabench.reports")


def render_html(store: Store, run_ids: list[str]) -> str:
    """The report of runs of one store as a string (``render_report`` writes it)."""
    if isinstance(run_ids, str):
        raise TypeError("run_ids must be a list of run ids, not one string")
    if not run_ids:
        raise ValueError("render_report needs at least one run id")
    from .runs import RunRef

    return render_runs([RunRef(store, run_id) for run_id in dict.fromkeys(run_ids)])


def _overview(runs: list[RunView]) -> TableView:
    """The Runs table; a column no run has a value for is left out (a study analysis has no generators, metrics,
    status or date: a row of dashes says nothing)."""
    columns = ["run", "benchmark", "generators", "metrics", "n images", "status", "created"]
    texts = [[run.run_id, run.benchmark, ", ".join(run.generators) or MISSING, ", ".join(run.metrics) or MISSING,
              run.n_images, run.status, run.created] for run in runs]
    keep = [j for j in range(len(columns)) if j < 2 or any(row[j] not in ("", MISSING) for row in texts)]
    return TableView([columns[j] for j in keep],
                     [[Cell(row[j], row[j], False, header=j == 0) for j in keep] for row in texts])


def render_runs(refs: list, comparison: Markup | None = None) -> str:
    """The page for runs that may live in different stores (``RunRef``s), with an optional comparison block."""
    thumbs: dict[Path, _Thumbnails] = {}
    runs = [_run_view(ref.store, ref.run_id, thumbs.setdefault(Path(ref.store.root), _Thumbnails(ref.store)))
            for ref in refs]
    overview = _overview(runs)
    smoke = [(run.run_id, run.smoke) for run in runs if run.smoke]
    title = (
        f"iqabench report: {runs[0].benchmark or 'run'} {runs[0].run_id}"
        if len(runs) == 1
        else f"iqabench report: comparison of {len(runs)} runs"
    )
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title,
        runs=runs,
        overview=overview,
        smoke=smoke,
        smoke_prefix=SMOKE_PREFIX,
        comparison=comparison,
        sort_script=Markup(SORT_SCRIPT),
        csp=_csp(SORT_SCRIPT),
    )


def render_report(store: Store, run_ids: list[str], out: Path | None = None) -> Path:
    """Write the HTML report for ``run_ids``, side by side when several.

    The default ``out`` is ``runs/<first run id>/report.html``; the file is written atomically.
    """
    html = render_html(store, run_ids)
    path = Path(out) if out is not None else store.run_dir(run_ids[0]) / REPORT_FILE
    atomic_write_text(path, html)
    return path
