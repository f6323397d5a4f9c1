"""The persisted form of a benchmark Result under ``runs/<run-id>/results/``.

Layout (format ``iqabench-result/v1``)::

    results/result.json     schema_version, benchmark, summary, notes, grids (ImageRef dicts), table index (each
                            table's footnote, unit, effect -> Holm p column), headlines (grids of estimates, CIs,
                            p-values, Holm-adjusted p, significant, bold, n_units), figure index, estimates
                            (every value with a CI: estimate, ci_low, ci_high, n_units, unit, method)
    results/per_item_scores.csv   the PerItemScores a cross-run comparison pairs (fixed columns)
    results/<table>.csv     one CSV per table (index columns first when the index is meaningful)
    results/<table>.tex     the same table as a booktabs LaTeX table (formatted, CIs in brackets, footnote caption)
    results/<table>.md      the same table as Markdown
    results/<figure>.svg    one matplotlib SVG per figure (inlined in the report)
    results/<figure>.png    ... and as 300 dpi PNG and vector PDF, for papers and slides
    results/<figure>.pdf

Why SVG and CSV as the primary forms: both are plain text that diff, archive and inline into the
HTML report without any decoding step, and neither can carry code that runs on
load (no pickles). Table and figure names come from plugin code, so every file
name goes through ``safe_child``: a name such as ``../evil`` is refused before
anything is written. ``result.json`` is written last, so a reader that finds it
finds every file it lists.
"""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.results import SCHEMA_VERSION, Headline, ImageRef, PerItemScores, Result, Table
from iqabench.io.csv_safety import escape_frame, unescape_frame
from iqabench.store.atomic_io import atomic_write_bytes, atomic_write_text
from iqabench.store.run_folders import RunFolderError, read_json_document, read_table, typed_field
from iqabench.store.store import safe_child

from .headline import headline_latex
from .sanitize import UnsafeFigureError, sanitize_svg
from .tables import CI_HIGH, CI_LOW, ci_columns, footnote, has_row_labels, to_latex, to_markdown

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from iqabench.store.store import Store

RESULT_FORMAT = "iqabench-result/v1"
RESULT_FILE = "result.json"
PER_ITEM_FILE = "per_item_scores.csv"
FIGURE_DPI = 300
# .tex/.md exports are for tables a reader pastes; per-item tables of paper-scale runs stay CSV-only.
EXPORT_MAX_ROWS = 5000



@dataclass
class SavedResult(Result):
    """A Result read back from disk: the same fields, but figures are SVG text (ready to inline), not matplotlib
    objects; plus what ``save_result`` derived from the tables and figures."""

    figures: dict[str, str] = field(default_factory=dict)  # type: ignore[assignment]  # name -> sanitised <svg>
    footnotes: dict[str, str] = field(default_factory=dict)  # table name -> how its numbers were made
    captions: dict[str, str] = field(default_factory=dict)  # figure name -> what it plots
    estimates: list[dict[str, Any]] = field(default_factory=list)


def results_dir(store: Store, run_id: str) -> Path:
    return store.run_dir(run_id) / "results"


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars become Python numbers, NaN/inf become null (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _table_frame(name: str, table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The frame as written (index moved into columns when it carries labels) and its index depth."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table {name!r} is a {type(table).__name__}, not a pandas DataFrame")
    frame = table.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        # CSV has one header row here; "a / b" keeps both levels readable in the report.
        frame.columns = [" / ".join(str(part) for part in col) for col in frame.columns]
    if not has_row_labels(frame):  # default or leftover (sorted/filtered) integer index: not written
        return frame.reset_index(drop=True), 0
    levels = frame.index.nlevels
    names = [
        n if n is not None else ("index" if levels == 1 else f"index_{i}") for i, n in enumerate(frame.index.names)
    ]
    frame.index = frame.index.set_names(names)
    return frame.reset_index(), levels


def figure_svg(fig: Figure, salt: str) -> str:
    """Matplotlib SVG with text kept as <text> (small, selectable) and ids salted per figure.

    The salt matters because several SVGs are inlined into one HTML page, where
    clip-path ids share one namespace; matplotlib otherwise salts with a random
    uuid, which is unique but makes every save differ byte-wise.
    """
    import matplotlib  # here, not at import: reading a result back (a resume) draws nothing

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def figure_caption(fig: Figure) -> str:
    """What the figure plots: its label (``Figure.set_label``, set by the plotting helpers) or, failing that,
    its suptitle and axes titles."""
    label = str(fig.get_label() or "")
    if label:
        return label
    parts = []
    if getattr(fig, "_suptitle", None) is not None and fig._suptitle.get_text():
        parts.append(fig._suptitle.get_text())
    parts += [ax.get_title() for ax in fig.axes if ax.get_title()]
    return "; ".join(dict.fromkeys(parts))


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """PNG (300 dpi) or PDF bytes of ``fig``, deterministic (no creation date in the metadata).

    PDFs embed TrueType (Type 42) fonts: matplotlib's default Type 3 fonts are refused by many publishers'
    checks (IEEE PDF eXpress, ACM) and do not select or search as text.
    """
    import matplotlib

    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {}
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(buffer, format=fmt, dpi=FIGURE_DPI, metadata=metadata, bbox_inches="tight")
    return buffer.getvalue()


def table_estimates(name: str, frame: pd.DataFrame, note: str, info: Table | None = None) -> list[dict[str, Any]]:
    """Every value of ``frame`` that has a CI, as ``{table, row, quantity, estimate, ci_low, ci_high, n, n_units,
    unit, n_images, p_holm, significant, method}``.

    ``row`` holds the row's label columns (text columns such as generator and
    metric); ``n`` is the row's ``n``/``n_pairs`` column when there is one;
    ``n_units`` the independent units the CI and test rest on; ``p_holm`` and
    ``significant`` are set for the table's effect columns; ``method`` is the
    row's ``ci_method`` column, else the table's footnote.
    """
    info = info or Table(frame)
    columns = [str(c) for c in frame.columns]
    cis = ci_columns(columns)
    if not cis:
        return []
    frame = frame.set_axis(columns, axis=1)
    hidden = {c for pair in cis.values() for c in pair}
    labels = [c for c in columns if c not in cis and c not in hidden and not pd.api.types.is_numeric_dtype(frame[c])
              and c != "ci_method"]
    n_col = next((c for c in ("n", "n_pairs", "n_images") if c in columns), None)
    labels = [c for c in labels if c != "unit"]
    from iqabench.analysis.stats import ALPHA

    out = []
    for record in frame.to_dict("records"):
        for col in cis:
            p_col = info.effects.get(col)
            p = record.get(p_col) if p_col else None
            out.append({
                "table": name, "row": {c: record[c] for c in labels}, "quantity": col,
                "estimate": record[col], "ci_low": record[col + CI_LOW], "ci_high": record[col + CI_HIGH],
                "n": record[n_col] if n_col else None,
                "n_units": record.get(info.n_units_column) if info.n_units_column else None,
                "unit": record.get("unit", info.unit) or info.unit, "n_images": record.get("n_images"),
                "p_holm": p, "significant": (bool(p is not None and math.isfinite(p) and p < ALPHA)
                                             if p_col else None),
                "method": str(record["ci_method"]) if "ci_method" in record else note,
            })
    return out


def _grid_json(frame: pd.DataFrame | None) -> list[list[Any]] | None:
    return None if frame is None else _jsonable(frame.to_numpy().tolist())


def headline_json(head: Headline) -> dict[str, Any]:
    """A Headline as result.json holds it: every grid as rows of values, plus the decisions it implies."""
    return {"source": head.source, "quantity": head.quantity, "row_key": head.estimate.index.name,
            "rows": [str(r) for r in head.estimate.index], "columns": [str(c) for c in head.estimate.columns],
            "higher_better": _jsonable(head.higher_better), "signed": head.signed, "footnote": head.footnote,
            "unit": head.unit, "n_images": head.n_images,
            **{part: _grid_json(getattr(head, part))
               for part in ("estimate", "low", "high", "p_value", "p_adjusted", "n_units")},
            "significant": _grid_json(head.significant), "bold": _grid_json(head.bold)}


def headline_from_json(data: dict[str, Any]) -> Headline:
    """The Headline ``headline_json`` wrote (the decisions are recomputed from the p-values, and agree)."""
    index = pd.Index([str(r) for r in data["rows"]], name=data.get("row_key"))
    columns = [str(c) for c in data["columns"]]

    def grid(part: str) -> pd.DataFrame | None:
        if data.get(part) is None:
            return None
        values = [[float("nan") if v is None else float(v) for v in row] for row in data[part]]
        return pd.DataFrame(values, index=index, columns=columns, dtype=float)
    return Headline(str(data["source"]), str(data["quantity"]), grid("estimate"), grid("low"), grid("high"),
                    {str(k): v for k, v in (data.get("higher_better") or {}).items()}, bool(data.get("signed")),
                    str(data.get("footnote") or ""), grid("p_value"), grid("p_adjusted"), grid("n_units"),
                    str(data.get("unit") or ""), data.get("n_images"))


def save_result(store: Store, run_id: str, result: Result) -> None:
    """Write ``result`` under ``runs/<run_id>/results/``; figures are closed once written."""
    folder = results_dir(store, run_id)
    # Resolve every name first so a bad one refuses the whole result before any file is written.
    table_paths = {name: safe_child(folder, f"{name}.csv") for name in result.tables}
    figure_paths = {name: safe_child(folder, f"{name}.svg") for name in result.figures}
    for grid, refs in result.grids.items():
        if not isinstance(grid, str) or not grid:
            raise ValueError(f"grid name {grid!r} must be a non-empty string")
        for ref in refs:
            if not isinstance(ref, ImageRef):
                raise TypeError(f"grid {grid!r} holds a {type(ref).__name__}; expected iqabench ImageRef")

    tables_index, estimates = [], []
    # the table heading the run also exports as the report shows it: best significant cell in bold, "n.s." marks
    head = result.headline
    if head is not None:  # the .headline.tex names generators as the page does: short labels, not local paths
        from iqabench.analysis.labels import generator_aliases

        from .headline import relabel

        aliases = generator_aliases(head.estimate.index)
        head = relabel(head, [aliases[str(r)] for r in head.estimate.index])
    for name, table in result.tables.items():
        frame, levels = _table_frame(name, table)
        info = result.table(name)
        note = footnote(info)
        atomic_write_text(table_paths[name], escape_frame(frame).to_csv(index=False))
        entry: dict[str, Any] = {"name": name, "file": table_paths[name].name, "index_levels": levels,
                                 **_jsonable(info.describe()), "footnote": note, "exports": []}
        if len(table) <= EXPORT_MAX_ROWS:
            grid = headline_latex(head, name, run=run_id) if head is not None and head.source == name else None
            exports = ((".tex", to_latex(table, name, note, run=run_id, info=info)),
                       (".md", to_markdown(table, note, info)), (".headline.tex", grid))
            for suffix, text in exports:
                if text is None:
                    continue
                path = table_paths[name].with_suffix(suffix)
                atomic_write_text(path, text)
                entry["exports"].append(path.name)
        tables_index.append(entry)
        estimates += table_estimates(name, frame, note, info)

    # pyplot only to release pyplot-managed figures (a no-op for bare Figures); none exist unless pyplot was
    # imported, and importing it costs ~0.3 s of a run's fixed cost (issue 29)
    plt = sys.modules.get("matplotlib.pyplot")

    figures_index = []
    for name, fig in result.figures.items():
        svg = figure_svg(fig, salt=f"{run_id}/{name}")
        atomic_write_text(figure_paths[name], svg)
        exports = []
        for fmt in ("png", "pdf"):
            path = figure_paths[name].with_suffix(f".{fmt}")
            atomic_write_bytes(path, figure_bytes(fig, fmt))
            exports.append(path.name)
        if plt is not None:
            plt.close(fig)
        figures_index.append({"name": name, "file": figure_paths[name].name, "exports": exports,
                              "caption": figure_caption(fig)})

    per_item = None
    if result.per_item is not None:
        atomic_write_text(folder / PER_ITEM_FILE, escape_frame(result.per_item.frame).to_csv(index=False))
        per_item = PER_ITEM_FILE
    document = {
        "format": RESULT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "benchmark": result.benchmark,
        "summary": _jsonable(result.summary),
        "notes": [str(note) for note in result.notes],
        "grids": {name: [_jsonable(asdict(ref)) for ref in refs] for name, refs in result.grids.items()},
        "tables": tables_index,
        "figures": figures_index,
        "headlines": [headline_json(h) for h in result.headlines],
        "per_item_scores": per_item,
        "estimates": _jsonable(estimates),
    }
    atomic_write_text(folder / RESULT_FILE, json.dumps(document, indent=2, allow_nan=False))


def _svg_body(name: str, text: str) -> str:
    """The <svg> element alone, rebuilt by the allow-list sanitiser (files in a run folder can be edited)."""
    return sanitize_svg(text, name=name)


def _image_ref(grid: str, data: Any) -> ImageRef:
    if not isinstance(data, dict) or "image_key" not in data:
        raise UserInputError(f"grid {grid!r} in {RESULT_FILE} holds an entry without an image_key")
    raw = data.get("scores") or {}
    if not isinstance(raw, dict) or not all(v is None or isinstance(v, (int, float)) for v in raw.values()):
        raise RunFolderError(f"grid {grid!r} in {RESULT_FILE} holds scores that are not numbers")
    scores = {str(k): (float("nan") if v is None else float(v)) for k, v in raw.items()}
    return ImageRef(
        image_key=str(data["image_key"]),
        caption=str(data.get("caption", "")),
        scores=scores,
        group=str(data.get("group", "")),
    )


def _entries(document: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """The ``tables``/``figures`` index of result.json: a list of objects with a string ``name``, or
    RunFolderError naming the file."""
    entries = typed_field(document, key, list, path, [])
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RunFolderError(f"{path}: an entry of {key!r} is not an object with a name; the file is damaged or "
                                 "not iqabench's")
    return entries


def load_result(store: Store, run_id: str) -> SavedResult:
    """Read what ``save_result`` wrote; raises FileNotFoundError when the run has no saved result."""
    folder = results_dir(store, run_id)
    path = folder / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run {run_id!r} has no saved result ({path} is missing); analyse the run first")
    document = read_json_document(path)  # bounded, a JSON object, not nested absurdly (iqabench.store.run_folders)
    if document.get("format") != RESULT_FORMAT:
        raise UserInputError(f"{path} has format {document.get('format')!r}; this version reads {RESULT_FORMAT!r}")

    version = typed_field(document, "schema_version", int, path, 1) or 1
    if version > SCHEMA_VERSION:
        raise UserInputError(f"{path} has schema_version {version}; this version of iqabench reads up to "
                             f"{SCHEMA_VERSION} (upgrade iqabench to read it)")
    tables: dict[str, pd.DataFrame] = {}
    table_info: dict[str, Table] = {}
    footnotes: dict[str, str] = {}
    for entry in _entries(document, "tables", path):
        name = entry["name"]
        csv_path = safe_child(folder, f"{name}.csv")
        levels = typed_field(entry, "index_levels", int, path, 0)
        frame = unescape_frame(read_table(csv_path))
        if levels:
            frame = frame.set_index(list(frame.columns[:levels]))
        footnotes[name] = str(entry.get("footnote") or "")
        effects = {str(k): str(v) for k, v in (entry.get("effects") or {}).items()}
        raw = {str(k): str(v) for k, v in (entry.get("p_values") or {}).items()}
        table_info[name] = Table(frame, footnotes[name], str(entry.get("unit") or ""),
                                 {k: v for k, v in effects.items() if v in frame.columns},
                                 str(entry.get("n_units_column") or ""),
                                 {k: v for k, v in raw.items() if v in frame.columns})
        tables[name] = frame

    figures, captions = {}, {}
    notes = [str(n) for n in typed_field(document, "notes", list, path, [])]
    for entry in _entries(document, "figures", path):
        name = entry["name"]
        captions[name] = str(entry.get("caption") or "")
        try:
            figures[name] = _svg_body(name, safe_child(folder, f"{name}.svg").read_text("utf-8"))
        except (UnsafeFigureError, UnicodeDecodeError, OSError) as exc:
            notes.append(f"Figure {name!r} was left out of this report: {exc}")

    grids = {name: [_image_ref(name, ref) for ref in typed_field({"refs": refs}, "refs", list, path, [])]
             for name, refs in typed_field(document, "grids", dict, path, {}).items()}
    headlines = [headline_from_json(h) for h in typed_field(document, "headlines", list, path, []) or []]
    if version < SCHEMA_VERSION:
        notes.append(f"This run was saved with result schema {version} (before iqabench's typed results): its "
                     "tables are shown as saved, without a headline, significance marks or paired comparisons.")
    per_item = None
    if document.get("per_item_scores"):
        per_item = PerItemScores(unescape_frame(read_table(safe_child(folder, PER_ITEM_FILE),
                                                           dtype={"condition": str, "prompt_id": str}))
                                 .fillna({"condition": ""}))
    return SavedResult(
        benchmark=str(document.get("benchmark", "")),
        tables=tables,
        figures=figures,
        grids=grids,
        summary=dict(typed_field(document, "summary", dict, path, {}) or {}),
        notes=notes,
        footnotes=footnotes,
        captions=captions,
        estimates=list(typed_field(document, "estimates", list, path, []) or []),
        table_info=table_info,
        headlines=headlines,
        per_item=per_item,
    )
