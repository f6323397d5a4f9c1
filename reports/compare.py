"""``iqabench report A B``: several finished runs compared in one page.

What a comparison adds to the runs' own sections:

* one merged table per headline quantity (e.g. RelGain, mean score) and
* the paired differences of every later run's generators against the first's,

both computed in the core by :func:`iqabench.analysis.compare.compare_runs` (tests at the
inference unit, Holm over each table: docs/statistics.md); this module renders
them with the same Styler grid as a single run's headline, so numbers read the same.

Runs may live in different stores (a run is named by id within ``--out``, or
by its folder ``.../runs/<id>``). The comparison never writes into a run's
folder: its default file is ``<store>/reports/compare-<ids>-<time>.html``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from markupsafe import Markup

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.results import Table
from iqabench.io.templating import html_environment
from iqabench.store.atomic_io import atomic_write_text
from iqabench.store.store import Store

from .headline import headline_html, legend
from .persist import SavedResult, load_result
from .runs import RunRef
from .tables import to_latex, to_markdown

REPORTS_DIR = "reports"


def resolve_run(text: str, store_root: Path) -> RunRef:
    """A run id under ``store_root/runs`` or a run folder (``.../runs/<id>``, holding ``run.json``)."""
    path = Path(text).expanduser()
    if path.is_dir() and (path / "run.json").is_file():
        path = path.resolve()
        if path.parent.name != "runs":
            raise UserInputError(f"{text} holds a run.json but is not inside a store's runs/ folder")
        return RunRef(Store(path.parent.parent), path.name)
    if (Path(store_root) / "runs" / text / "run.json").is_file():
        return RunRef(Store(store_root), text)
    raise FileNotFoundError(f"no run {text!r}: neither a run folder with a run.json nor a run id under "
                            f"{Path(store_root) / 'runs'} (list them with: iqabench list runs --out {store_root})")


def default_output(refs: list[RunRef], now: _dt.datetime | None = None) -> Path:
    """``<first store>/reports/compare-<ids>-<UTC time>.html`` (one run: ``report-<id>-<time>.html``, it compares
    nothing): new each time, never inside a run folder."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if len(refs) == 1:
        return refs[0].store.root / REPORTS_DIR / f"report-{refs[0].run_id}-{now:%Y%m%d-%H%M%S}.html"
    ids = "_vs_".join(ref.run_id for ref in refs)
    if len(ids) > 120:
        ids = f"{refs[0].run_id}_and_{len(refs) - 1}_more"
    return refs[0].store.root / REPORTS_DIR / f"compare-{ids}-{now:%Y%m%d-%H%M%S}.html"


def check_output(path: Path, refs: list[RunRef]) -> None:
    """Refuse to write over a run's own files."""
    target = Path(path).resolve()
    for ref in refs:
        folder = ref.folder.resolve()
        if target == folder or folder in target.parents:
            raise UserInputError(f"{path} is inside run {ref.run_id}'s folder; a comparison never overwrites a run's "
                             "own report -- pick another -o path (or leave -o out for a new file)")


# --- the page: renders iqabench.analysis.compare's Result -------------------------------------------------------------

def comparison_sections(results: dict[str, SavedResult]) -> tuple[Markup, dict[str, Table]]:
    """The comparison's HTML (inserted above the runs' own sections) and its tables, for export.

    Every number and decision comes from :func:`iqabench.analysis.compare.compare_runs`; this only renders it,
    with short generator labels, each quantity's unit and one colour scale for every run
    (:mod:`iqabench.reports.comparison_view`)."""
    from iqabench.analysis.compare import compare_runs, per_item_source

    from .comparison_view import aliased, merged_svg, paired_display, unit_of
    from .tables import table_view

    comparison = compare_runs(results)
    env = html_environment("iqabench.reports")
    shown = [aliased(head) for head in comparison.headlines]
    blocks = [(head.quantity, unit_of(head.quantity), Markup(headline_html(head, uuid=f"m{i}")),
               [n for n in (legend(head), head.footnote) if n], merged_svg(head, i)) for i, head in enumerate(shown)]
    paired = comparison.table("paired_differences") if "paired_differences" in comparison.tables else None
    sources = []
    for run_id, saved in results.items():
        usable, why = per_item_source(saved)
        sources.append((run_id, "per_item_scores" if usable else None, why))
    display = paired_display(paired) if paired is not None and len(paired.frame) else None
    html = env.get_template("comparison.html.j2").render(
        run_ids=list(results), merged=blocks, paired=table_view(display.frame, info=display) if display else None,
        paired_note=display.footnote if display else str(comparison.summary.get("paired_note") or ""),
        sources=sources)
    return Markup(html), {name: comparison.table(name) for name in comparison.tables}


def render_comparison(refs: list[RunRef], out: Path | None = None) -> Path:
    """Write the comparison page of ``refs`` (and its tables as CSV/LaTeX/Markdown next to it); returns the path."""
    from .render import render_runs

    if len(refs) < 1:
        raise UserInputError("a report needs at least one run")
    ids = [ref.run_id for ref in refs]
    if len(set(ids)) != len(ids):
        raise UserInputError(f"the same run id appears twice ({', '.join(ids)}); give each run once")
    results = {ref.run_id: load_result(ref.store, ref.run_id) for ref in refs}
    path = Path(out) if out is not None else default_output(refs)
    check_output(path, refs)
    comparison, tables = comparison_sections(results) if len(refs) > 1 else (None, {})
    html = render_runs(refs, comparison=comparison)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        frame, note = table.frame, table.footnote
        atomic_write_text(path.with_name(f"{path.stem}.{name}.csv"), frame.to_csv(index=frame.index.name is not None))
        atomic_write_text(path.with_name(f"{path.stem}.{name}.tex"),
                          to_latex(frame, name, note, run=path.stem, info=table))
        atomic_write_text(path.with_name(f"{path.stem}.{name}.md"), to_markdown(frame, note, table))
    atomic_write_text(path, html)
    return path
