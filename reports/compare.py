"""``iqabench report A B``: several finished runs compared in one page.

What a comparison adds to the runs' own sections:

* one merged table per headline quantity (e.g. RelGain, mean score): every
  run's generators as rows (``generator (run)``), the union of metrics as
  columns, estimates with their CIs, best per column marked -- the same Styler
  grid as a single run's headline, so numbers read the same;
* where two runs scored the same prompts and seeds (their per-item tables share
  ``(prompt text, seed)``: pairs are matched by content, never by prompt file name and row index), the
  paired difference of every later run's generators
  against the first run's, per metric: mean difference with a CI clustered by
  prompt, the paired t-test and the Wilcoxon signed-rank test, both with
  Holm-adjusted p-values across the whole table (one family of comparisons).
  Signs are aligned so that positive means "better than the first run".

Runs may live in different stores (a run is named by id within ``--out``, or
by its folder ``.../runs/<id>``). The comparison never writes into a run's
folder: its default file is ``<store>/reports/compare-<ids>-<time>.html``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from iqabench.atomic_io import atomic_write_text
from iqabench.errors import UserInputError
from iqabench.store import Store

from .headline import Headline, headline, headline_html, legend
from .persist import SavedResult, load_result
from .runs import RunRef
from .tables import to_latex, to_markdown

REPORTS_DIR = "reports"
ID_COLUMNS = ("prompt_id", "seed")


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


# --- merged headline -------------------------------------------------------------------------------------------

def merged_headlines(results: dict[str, SavedResult]) -> list[Headline]:
    """One Headline per quantity shared by several runs; rows ``generator (run)``."""
    by_quantity: dict[tuple[str, str], list[tuple[str, Headline]]] = {}
    for run_id, saved in results.items():
        head = headline(saved.tables, saved.footnotes)
        if head is not None:
            by_quantity.setdefault((head.source, head.quantity), []).append((run_id, head))
    merged = []
    for (source, quantity), heads in by_quantity.items():
        def stack(part: str, heads=heads) -> pd.DataFrame:
            frames = []
            for run_id, head in heads:
                frame = getattr(head, part).copy()
                frame.index = [f"{row} ({run_id})" for row in frame.index]
                frames.append(frame)
            out = pd.concat(frames, axis=0, sort=False)
            out.index.name = heads[0][1].estimate.index.name
            return out
        higher: dict[str, bool | None] = {}
        for _, head in heads:
            for column, value in head.higher_better.items():
                higher.setdefault(column, value)
        notes = list(dict.fromkeys(h.footnote for _, h in heads if h.footnote))
        merged.append(Headline(source, quantity, stack("estimate"), stack("low"), stack("high"), higher,
                               any(h.signed for _, h in heads), " ".join(notes)))
    return merged


# --- paired differences ----------------------------------------------------------------------------------------

PER_ITEM_KEYS = ("generator", "prompt_id", "prompt", "seed")  # prompt: the text items are paired by
# columns of per-item tables that identify or describe an image rather than score it
NOT_SCORES = {"generator", "prompt_id", "prompt", "seed", "condition", "role", "source", "image_key", "target",
              "scale", "baseline"}


def _is_metric(name: str) -> bool:
    from iqabench.metrics import metric_info

    try:
        metric_info(name)
    except Exception:  # not a registered metric (e.g. GenEval's "correct", a count): not a paired score
        return False
    return True


def per_item_source(saved: SavedResult) -> tuple[str | None, str]:
    """(table, why): the run's per-item score table the paired differences read, or None and the reason.

    Usable: ``relgain_per_item`` (generator and baseline score per metric), or
    any ``*per_item`` / ``*per_image`` table keyed by (generator, prompt_id,
    seed) -- plus ``condition`` for the sweeps -- with one column per
    registered metric (``scores_per_item``, condition-sweep's and scale-sweep's
    ``per_image``). Aggregated tables (means, matrices, FID) have no items to
    pair; GenEval's per-image table holds a correct/incorrect verdict, not a
    metric score.
    """
    tables = saved.tables
    if "relgain_per_item" in tables and "prompt" in set(map(str, tables["relgain_per_item"].columns)):
        return "relgain_per_item", "generator and baseline score per (prompt_id, seed, metric)"
    for name, frame in tables.items():
        if not (name.endswith("per_item") or name.endswith("per_image")):
            continue
        columns = set(map(str, frame.columns))
        if not set(PER_ITEM_KEYS) <= columns:
            continue
        if [c for c in _score_columns(frame)]:
            keyed = "(generator, condition, prompt_id, seed)" if "condition" in columns else \
                "(generator, prompt_id, seed)"
            return name, f"one score per metric and {keyed}"
    names = ", ".join(tables) or "none"
    return None, (f"no per-image metric scores keyed by (generator, prompt text, seed) among its tables ({names}); "
                  "aggregates (means, matrices, FID) or verdicts cannot be paired item by item")


def _score_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if str(c) not in NOT_SCORES and not str(c).startswith("n_")
            and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            and _is_metric(str(c))]


def content_ids(frame: pd.DataFrame) -> pd.Series | None:
    """The pairing key of each row in place of ``prompt_id``: the prompt *text* (issue 26), never the file name and
    row index that prompt ids are made of, so two runs over different prompt files that share a name are not
    paired item by item. Within a generator, an item is then (prompt text, seed); the same text given twice in one
    file is numbered in file order ("text #2"). None when the table records no prompt text (nothing to pair by)."""
    if "prompt" not in frame.columns:
        return None
    seen: dict[str, int] = {}
    labels: dict[object, str] = {}
    for prompt_id, text in dict.fromkeys(zip(frame["prompt_id"], frame["prompt"].astype(str), strict=True)):
        if prompt_id in labels:
            continue
        seen[text] = seen.get(text, 0) + 1
        labels[prompt_id] = text if seen[text] == 1 else f"{text} #{seen[text]}"
    return frame["prompt_id"].map(labels)


def item_scores(saved: SavedResult) -> pd.DataFrame:
    """Long per-image scores ``generator, condition, prompt_id, seed, metric, score`` from the run's per-item table
    (see :func:`per_item_source`; ``condition`` is "" where the table has none); empty when the run has none.
    ``prompt_id`` holds the prompt text (:func:`content_ids`): pairs are matched by content."""
    name, _ = per_item_source(saved)
    columns = ["generator", "condition", *ID_COLUMNS, "metric", "score"]
    if name is None:
        return pd.DataFrame(columns=columns)
    frame = saved.tables[name]
    frame = frame.reset_index() if frame.index.name else frame
    content = content_ids(frame)
    if content is None:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(prompt_id=content)
    if name == "relgain_per_item":
        # the generators' scores only: the relgain baselines are the same base model with the same seeds in every
        # run, so pairing them across runs compares identical images (all-zero differences, p = 1)
        method = frame[["generator", *ID_COLUMNS, "metric", "generator_score"]].rename(
            columns={"generator_score": "score"})
        long = method.drop_duplicates(["generator", *ID_COLUMNS, "metric"])
        return long.assign(condition="")[columns]
    frame = frame.assign(condition=frame["condition"].astype(str) if "condition" in frame else "")
    return frame.melt(id_vars=["generator", "condition", *ID_COLUMNS], value_vars=_score_columns(frame),
                      var_name="metric", value_name="score")[columns]


def _lower_better(results: dict[str, SavedResult]) -> dict[str, bool]:
    """Metric directions as the runs recorded them (a ``direction`` column), else from the metric registry."""
    out: dict[str, bool] = {}
    for saved in results.values():
        for table in saved.tables.values():
            if {"metric", "direction"} <= set(map(str, table.columns)):
                for metric, direction in zip(table["metric"], table["direction"], strict=True):
                    out.setdefault(str(metric), str(direction).startswith("lower"))
    return out


def paired_differences(results: dict[str, SavedResult]) -> pd.DataFrame:
    """Every later run's generators against the first run's, per shared metric, on shared (prompt, seed) items."""
    from iqabench.stats import holm, paired_statistics

    run_ids = list(results)
    directions = _lower_better(results)
    scores = {run_id: item_scores(saved) for run_id, saved in results.items()}
    reference = run_ids[0]
    rows = []
    identical: list[str] = []
    unpaired: list[str] = []  # no shared (prompt text, seed) items: compared in the merged tables only
    for other in run_ids[1:]:
        a, b = scores[reference], scores[other]
        if a.empty or b.empty:
            continue
        for metric in [m for m in dict.fromkeys(a.metric) if m in set(b.metric)]:
            lower = directions.get(metric)
            if lower is None:
                from iqabench.metrics import metric_info

                lower = metric_info(metric).lower_better
            # sweeps: only images made at the same condition are paired (p99 with p99, not p99 with p1)
            for gen_a, cond in dict.fromkeys(zip(a.generator, a.condition, strict=True)):
                for gen_b in dict.fromkeys(b.generator[b.condition == cond]):
                    left = a[(a.generator == gen_a) & (a.condition == cond) & (a.metric == metric)].set_index(
                        list(ID_COLUMNS)).score
                    right = b[(b.generator == gen_b) & (b.condition == cond) & (b.metric == metric)].set_index(
                        list(ID_COLUMNS)).score
                    shared = left.index.intersection(right.index)
                    if len(shared) < 2:
                        unpaired.append(f"{gen_b} ({other}) vs {gen_a} ({reference}), {metric}"
                                        + (f", {cond}" if cond else ""))
                        continue
                    base = left.loc[shared].to_numpy(float)
                    method = right.loc[shared].to_numpy(float)
                    if np.array_equal(base, method):  # the same images scored twice: nothing to test
                        identical.append(f"{gen_b} ({other}) vs {gen_a} ({reference}), {metric}"
                                         + (f", {cond}" if cond else ""))
                        continue
                    prompts = [str(p) for p, _ in shared]
                    stats = paired_statistics(base, method, lower, prompts)
                    rows.append({"run": other, "generator": gen_b, "vs_run": reference, "vs_generator": gen_a,
                                 "condition": cond, "metric": metric,
                                 "direction": "lower is better" if lower else "higher is better",
                                 "difference": stats["improvement"],
                                 "difference_ci_low": stats["improvement_ci_low"],
                                 "difference_ci_high": stats["improvement_ci_high"],
                                 "n_pairs": stats["n_pairs"], "n_prompts": len(set(prompts)),
                                 "t_p": stats["p_value"], "wilcoxon_p": stats["wilcoxon_p_value"],
                                 "win_rate": stats["win_rate"], "ci_method": stats["ci_method"]})
    table = pd.DataFrame(rows)
    if rows:
        table["t_p_holm"] = holm(table["t_p"].to_numpy(float))
        table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"].to_numpy(float))
        # the Holm-adjusted p-values are the ones to read, so they sit right after the difference
        order = ["run", "generator", "vs_run", "vs_generator", "condition", "metric", "direction", "difference",
                 "difference_ci_low", "difference_ci_high", "t_p_holm", "wilcoxon_p_holm", "n_pairs", "n_prompts",
                 "t_p", "wilcoxon_p", "win_rate", "ci_method"]
        table = table[[c for c in order if c != "condition" or table["condition"].astype(bool).any()]]
        from iqabench.stats import describe_method

        table.attrs["footnote"] = (
            "difference = mean over shared (prompt, seed) items of run minus vs_run, sign flipped for "
            "lower-is-better metrics (positive = better than the first run). "
            + describe_method(table["ci_method"].tolist())
            + " Tests: two-sided paired t and Wilcoxon signed-rank; *_holm: Holm-adjusted across this table. "
            "win_rate: share of items improved (ties half). n.s.: the difference's 95% CI includes 0.")
        table.attrs["signed"] = ["difference"]  # n.s. marks, as in the headline tables
        table.attrs["latex_columns"] = ["run", "generator", "vs_generator", "condition", "metric", "difference",
                                        "t_p", "t_p_holm", "wilcoxon_p_holm", "n_pairs", "win_rate"]
    if identical:
        table.attrs["footnote"] = (table.attrs.get("footnote", "") + " Left out, identical images (every "
                                   "difference exactly 0): " + "; ".join(identical) + ".").strip()
    if unpaired:
        table.attrs["footnote"] = (table.attrs.get("footnote", "") + " Compared unpaired (merged tables only), "
                                   "fewer than 2 shared (prompt text, seed) items: " + "; ".join(unpaired)
                                   + ".").strip()
    return table


# --- the page --------------------------------------------------------------------------------------------------

def paired_sources(results: dict[str, SavedResult]) -> list[tuple[str, str | None, str]]:
    """Per run: (run id, the per-item table paired differences read or None, what it holds or why none is used),
    so the page says which tables were compared pairwise and why the others were not."""
    return [(run_id, *per_item_source(saved)) for run_id, saved in results.items()]


def comparison_sections(results: dict[str, SavedResult]) -> tuple[Markup, dict[str, pd.DataFrame]]:
    """The comparison's HTML (inserted above the runs' own sections) and its tables, for export."""
    from iqabench.templating import html_environment

    from .tables import table_view

    merged = merged_headlines(results)
    paired = paired_differences(results)
    env = html_environment("iqabench.reports")
    from .comparison_view import aliased, merged_svg, paired_display, paired_note, unit_of

    shown = [aliased(head) for head in merged]
    blocks = [(head.quantity, unit_of(head.quantity), Markup(headline_html(head, uuid=f"m{i}")),
               [n for n in (legend(head), head.footnote) if n], merged_svg(head, i)) for i, head in enumerate(shown)]
    html = env.get_template("comparison.html.j2").render(
        run_ids=list(results), merged=blocks, paired=table_view(paired_display(paired)) if len(paired) else None,
        paired_note=paired_note(paired) if len(paired) else "", sources=paired_sources(results))
    tables = {}
    for head in merged:  # named after the quantity (merged_relgain), so the files say what they hold
        name = "merged_" + "".join(ch if ch.isalnum() else "_" for ch in str(head.source)).strip("_")
        tables[name if name not in tables else f"{name}_{len(tables) + 1}"] = _merged_frame(head)
    if len(paired):
        tables["paired_differences"] = paired
    return Markup(html), tables


def _merged_frame(head: Headline) -> pd.DataFrame:
    """Flat export of a merged grid: row label, then ``X``, ``X_ci_low``, ``X_ci_high`` per column."""
    out = pd.DataFrame(index=head.estimate.index)
    for column in head.estimate.columns:
        out[str(column)] = head.estimate[column]
        if np.isfinite(head.low[column].to_numpy(float)).any():
            out[f"{column}_ci_low"] = head.low[column]
            out[f"{column}_ci_high"] = head.high[column]
    out.index.name = "generator (run)"
    out.attrs["footnote"] = head.footnote
    return out


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
    for name, frame in tables.items():
        note = frame.attrs.get("footnote", "")
        atomic_write_text(path.with_name(f"{path.stem}.{name}.csv"), frame.to_csv(index=frame.index.name is not None))
        atomic_write_text(path.with_name(f"{path.stem}.{name}.tex"), to_latex(frame, name, note, run=path.stem))
        atomic_write_text(path.with_name(f"{path.stem}.{name}.md"), to_markdown(frame, note))
    atomic_write_text(path, html)
    return path
