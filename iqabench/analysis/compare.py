"""The cross-run comparison, computed in the core and returned as a Result (``iqabench report A B`` renders it).

Two parts, both under the one decision rule of docs/statistics.md:

* merged headlines: every run's headline cells stacked (rows ``generator (run)``)
  for each quantity several runs share; the cells' unit-level p-values are
  Holm-adjusted again over the merged grid (one table, one family);
* paired differences: every later run's generators against the first run's, per
  shared metric, on the (prompt, seed) items both scored (their
  :class:`~iqabench.contracts.results.PerItemScores`); the test is the paired t-test on
  per-prompt mean differences (n = prompts) when seeds repeat within prompts,
  else on images; Holm over the table's rows decides every mark.

Signs are aligned so that positive means "better than the first run".
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ..contracts.results import Headline, Result, Table
from .decisions import decision_sentence, effect_table, unit_sentence
from .identical import identical_scores_note
from .stats import decide, describe_method, paired_statistics

ID_COLUMNS = ("prompt_id", "seed")


def merged_headlines(results: dict[str, Result]) -> list[Headline]:
    """One Headline per (table, quantity) shared by runs; rows ``generator (run)``; Holm over the merged cells."""
    by_quantity: dict[tuple[str, str], list[tuple[str, Headline]]] = {}
    for run_id, result in results.items():
        head = result.headline
        if head is not None:
            by_quantity.setdefault((head.source, head.quantity), []).append((run_id, head))
    merged = []
    for (source, quantity), heads in by_quantity.items():
        def stack(part: str, heads=heads) -> pd.DataFrame | None:
            frames = []
            for run_id, head in heads:
                frame = getattr(head, part)
                if frame is None:
                    frame = pd.DataFrame(np.nan, index=head.estimate.index, columns=head.estimate.columns)
                frame = frame.copy()
                frame.index = [f"{row} ({run_id})" for row in frame.index]
                frames.append(frame)
            out = pd.concat(frames, axis=0, sort=False)
            out.index.name = heads[0][1].estimate.index.name
            return out
        higher: dict[str, bool | None] = {}
        for _, head in heads:
            for column, value in head.higher_better.items():
                higher.setdefault(column, value)
        signed = any(h.signed for _, h in heads)
        p_value = stack("p_value") if signed else None
        adjusted = None
        if p_value is not None:
            flat, _ = decide(p_value.to_numpy(float).ravel())
            adjusted = pd.DataFrame(flat.reshape(p_value.shape), index=p_value.index, columns=p_value.columns)
        notes = list(dict.fromkeys(h.footnote for _, h in heads if h.footnote))
        units = list(dict.fromkeys(h.unit for _, h in heads if h.unit))
        merged.append(Headline(source, quantity, stack("estimate"), stack("low"), stack("high"), higher, signed,
                               " ".join(notes), p_value, adjusted, stack("n_units"), "/".join(units),
                               sum(h.n_images or 0 for _, h in heads) or None))
    return merged


def per_item_source(result: Result) -> tuple[bool, str]:
    """(usable, why): whether the run carries per-image scores a comparison can pair, and what they are."""
    if result.per_item is not None and len(result.per_item.frame):
        keyed = ("(generator, condition, prompt_id, seed)" if result.per_item.frame.condition.astype(bool).any()
                 else "(generator, prompt_id, seed)")
        return True, f"per-item scores: one score per metric and {keyed}"
    return False, ("no per-item scores in its result (aggregates such as means, matrices or FID, verdicts, or a "
                   "run saved before result schema 2) cannot be paired item by item")


def content_ids(frame: pd.DataFrame) -> pd.Series:
    """The pairing key of each row in place of ``prompt_id``: the prompt *text* (issue 26), never the file name and
    row index prompt ids are made of, so two runs over different prompt files that share a name are not paired.
    Within a generator an item is then (prompt text, seed); the same text twice in one file is numbered in file
    order ("text #2"). Rows without a prompt text get no key (NaN): they are never paired."""
    seen: dict[tuple[str, str], int] = {}
    labels: dict[tuple[str, str], str] = {}
    for generator, prompt_id, text in dict.fromkeys(zip(frame["generator"].astype(str), frame["prompt_id"],
                                                        frame["prompt"].fillna("").astype(str), strict=True)):
        if not text or (generator, prompt_id) in labels:
            continue
        seen[(generator, text)] = seen.get((generator, text), 0) + 1
        count = seen[(generator, text)]
        labels[(generator, prompt_id)] = text if count == 1 else f"{text} #{count}"
    keys = list(zip(frame["generator"].astype(str), frame["prompt_id"], strict=True))
    return pd.Series([labels.get(k) for k in keys], index=frame.index, dtype=object)


def _scores(result: Result) -> pd.DataFrame:
    """Long per-image scores with ``prompt_id`` replaced by the content key (:func:`content_ids`); rows without a
    prompt text are dropped (nothing to pair them by)."""
    if result.per_item is None:
        return pd.DataFrame(columns=["generator", "condition", *ID_COLUMNS, "metric", "score", "lower_better"])
    frame = result.per_item.frame
    frame = frame.assign(condition=frame.condition.fillna("").astype(str), prompt_id=content_ids(frame))
    return frame[frame.prompt_id.notna()]


def paired_differences(results: dict[str, Result]) -> Table:
    """Every later run's generators against the first run's, per shared metric, on shared (prompt, seed) items."""
    run_ids = list(results)
    scores = {run_id: _scores(result) for run_id, result in results.items()}
    reference = run_ids[0]
    rows, identical, unpaired = [], [], []
    for other in run_ids[1:]:
        a, b = scores[reference], scores[other]
        if a.empty or b.empty:
            continue
        for metric in [m for m in dict.fromkeys(a.metric) if m in set(b.metric)]:
            lower = bool(a[a.metric == metric].lower_better.iloc[0])
            # sweeps: only images made at the same condition are paired (p99 with p99, not p99 with p1)
            for gen_a, cond in dict.fromkeys(zip(a.generator, a.condition, strict=True)):
                for gen_b in dict.fromkeys(b.generator[b.condition == cond]):
                    left = a[(a.generator == gen_a) & (a.condition == cond) & (a.metric == metric)].set_index(
                        list(ID_COLUMNS)).score
                    right = b[(b.generator == gen_b) & (b.condition == cond) & (b.metric == metric)].set_index(
                        list(ID_COLUMNS)).score
                    shared = left.index.intersection(right.index)
                    if len(shared) < 2:  # compared unpaired (the merged headline), never paired by position
                        unpaired.append(f"{gen_b} ({other}) vs {gen_a} ({reference})" + (f", {cond}" if cond else ""))
                        continue
                    base = left.loc[shared].to_numpy(float)
                    method = right.loc[shared].to_numpy(float)
                    label = f"{gen_b} ({other}) vs {gen_a} ({reference}), {metric}" + (f", {cond}" if cond else "")
                    if np.array_equal(base, method):  # the same images scored twice: nothing to test
                        identical.append(label)
                        continue
                    prompts = [str(p) for p, _ in shared]
                    stats = paired_statistics(base, method, lower, prompts)
                    rows.append({"run": other, "generator": gen_b, "vs_run": reference, "vs_generator": gen_a,
                                 "condition": cond, "metric": metric,
                                 "direction": "lower is better" if lower else "higher is better",
                                 "difference": stats["improvement"],
                                 "difference_ci_low": stats["improvement_ci_low"],
                                 "difference_ci_high": stats["improvement_ci_high"],
                                 "t_p": stats["p_value"], "n_units": stats["n_units"], "unit": stats["unit"],
                                 "n_images": stats["n_pairs"], "wilcoxon_p": stats["wilcoxon_p_value"],
                                 "win_rate": stats["win_rate"], "ci_method": stats["ci_method"]})
    frame = pd.DataFrame(rows)
    note = ""
    if rows:
        unit = "/".join(dict.fromkeys(frame.unit))
        note = ("difference = mean over shared (prompt, seed) items of run minus vs_run, sign flipped for "
                "lower-is-better metrics (positive = better than the first run). "
                + describe_method(frame["ci_method"].tolist()) + " "
                + unit_sentence(unit, frame.n_units.to_numpy(float), int(frame.n_images.max())) + " "
                + decision_sentence() + " The decision reads difference_p_holm (the paired t-test on per-unit "
                "mean differences, t_p, Holm-adjusted over this table); wilcoxon_p (signed-rank on the same "
                "unit means, unadjusted) is a check of the t-test's normality assumption, not a second decision. "
                "win_rate: share of images improved (ties half).")
        table = effect_table(frame, {"difference": "t_p"}, footnote=note, unit=unit)
        order = ["run", "generator", "vs_run", "vs_generator", "condition", "metric", "direction", "difference",
                 "difference_ci_low", "difference_ci_high", "difference_p_holm", "t_p", "n_units", "unit", "n_images",
                 "wilcoxon_p", "win_rate", "ci_method"]
        table.frame = table.frame[[c for c in order if c != "condition" or frame["condition"].astype(bool).any()]]
    else:
        table = Table(frame)
    if identical:
        table.footnote = (table.footnote + " " + identical_scores_note(identical)).strip()
    if unpaired:
        table.footnote = (table.footnote + " Compared unpaired (fewer than 2 shared (prompt text, seed) items, so "
                          "only their merged estimates above compare them): "
                          + "; ".join(dict.fromkeys(unpaired)) + ".").strip()
    return table


def merged_frame(head: Headline) -> pd.DataFrame:
    """Flat export of a merged grid: row label, then ``X``, ``X_ci_low``, ``X_ci_high`` (and ``X_p_holm``)."""
    from .labels import generator_aliases

    rows = [str(r) for r in head.estimate.index]
    specs = [r.rsplit(" (", 1)[0] for r in rows]  # "spec (run)": the exports name the spec by its short label
    aliases = generator_aliases(specs)
    index = pd.Index([aliases[s] + r[len(s):] for s, r in zip(specs, rows, strict=True)])
    head = replace(head, estimate=head.estimate.set_axis(index), low=head.low.set_axis(index),
                   high=head.high.set_axis(index),
                   p_value=None if head.p_value is None else head.p_value.set_axis(index),
                   p_adjusted=None if head.p_adjusted is None else head.p_adjusted.set_axis(index),
                   n_units=None if head.n_units is None else head.n_units.set_axis(index))
    out = pd.DataFrame(index=head.estimate.index)
    for column in head.estimate.columns:
        out[str(column)] = head.estimate[column]
        if np.isfinite(head.low[column].to_numpy(float)).any():
            out[f"{column}_ci_low"] = head.low[column]
            out[f"{column}_ci_high"] = head.high[column]
        if head.p_value is not None:
            out[f"{column}_p"] = head.p_value[column]
        if head.p_adjusted is not None:
            out[f"{column}_p_holm"] = head.p_adjusted[column]
    if head.n_units is not None:  # the fewest units any cell of the row rests on (decides "too few for a CI")
        out["n_units"] = head.n_units.min(axis=1).round().astype("Int64")
    out.index.name = "generator (run)"
    return out


def compare_runs(results: dict[str, Result]) -> Result:
    """The comparison of ``results`` (first = reference) as a Result: merged headlines and paired differences."""
    out = Result("comparison")
    out.headlines = merged_headlines(results)
    for head in out.headlines:  # named after the quantity's table (merged_relgain), so the files say what they hold
        name = "merged_" + "".join(ch if ch.isalnum() else "_" for ch in str(head.source)).strip("_")
        name = name if name not in out.tables else f"{name}_{len(out.tables) + 1}"
        effects = {str(c): f"{c}_p_holm" for c in head.estimate.columns} if head.p_adjusted is not None else {}
        raw = {str(c): f"{c}_p" for c in head.estimate.columns} if head.p_value is not None else {}
        out.add_table(name, Table(merged_frame(head), head.footnote, head.unit, effects,
                                   "n_units" if head.n_units is not None else "", raw))
    paired = paired_differences(results)
    if len(paired.frame):
        out.add_table("paired_differences", paired)
    out.summary = {"runs": list(results), "reference": next(iter(results), None),
                   "paired_note": paired.footnote,  # e.g. which generators were compared unpaired, and why
                   "paired_sources": {run_id: per_item_source(r)[1] for run_id, r in results.items()}}
    return out
