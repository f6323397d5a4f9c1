"""The ``geneval`` benchmark: compositional fidelity on GenEval's 553 prompts (IQA-Adapter paper Tables 1, 4).

Plan: every GenEval prompt x ``images_per_prompt`` seeds (4 by default, as the
official protocol) for every generator; the core generates and caches. Analyse:
detect objects, apply the official rules (:mod:`.rules`), cache each image's
verdict in the Store (blob keyed by image key + detector + CLIP + rules config),
and lay the numbers out as Table 1/4: rows generators, columns the six tasks
and the overall score (mean of task accuracies), best per column starred.

Options (``--option key=value``): ``images_per_prompt`` (4), ``per_task`` (keep the
first N prompts of each task, for quick runs), ``weights`` (pretrained | random:
random-weight detector and CLIP for a weights-free smoke run), ``detector``
(mask2former | maskrcnn), ``detector_weights`` (path), ``clip_arch`` (ViT-L-14),
``clip_pretrained`` (openai), ``clip_weights`` (path), the official
``threshold`` / ``counting_threshold`` / ``max_objects`` / ``max_overlap`` /
``position_threshold``, and ``export`` (folder: write the official layout and
``results.jsonl`` per generator, to cross-check with the official scripts).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iqabench.analysis.labels import generator_aliases
from iqabench.analysis.stats import describe_method, mean_ci, mean_of_strata_ci
from iqabench.benchmark import AnalysisContext, BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool, WorkItem
from iqabench.contracts.specs import RunSpec
from iqabench.store.store import content_key

from .clip import RANDOM
from .layout import load_metadata, write_official_folder, write_results_jsonl
from .rules import TASKS, Detection, Thresholds, evaluate, filter_detections, result_row, summarize

EVAL_VERSION = "geneval-eval/v1"
SMOKE_NOTE = ("WEIGHTS-FREE SMOKE RUN: the detector and CLIP have random weights (--option weights=random). "
              "Every number in this report is meaningless; it only shows that the pipeline runs end to end.")


def reason_kind(line: str) -> str:
    """A coarse category for one official failure line, for the failure-reason table."""
    if re.match(r"^expected .+<\d+, found \d+$", line):
        return "too many objects"
    if line.startswith("no target for "):
        return "position target missing"
    if re.match(r"^expected .+ (left of|right of|above|below) target, found", line):
        return "wrong position"
    if "; and" in line:
        return "wrong color"
    if re.match(r"^expected .+>=\d+, found \d+$", line):
        return "missing object"
    return "other"


def failure_reason_counts(rows: list[dict]) -> pd.DataFrame:
    """Per (generator, task, kind): n = incorrect images with at least one failure of that kind (one image with
    two failed clauses of one kind counts once: n counts images, not clauses)."""
    reasons = []
    for r in rows:
        if not r["correct"]:
            for kind in dict.fromkeys(reason_kind(line) for line in r["reason"].splitlines()):
                reasons.append({"generator": r["generator"], "task": r["tag"], "kind": kind})
    if not reasons:
        return pd.DataFrame(columns=["generator", "task", "kind", "n"])
    counts = pd.DataFrame(reasons).value_counts().rename("n").reset_index()
    counts = counts.sort_values(["generator", "task", "n"], ascending=[True, True, False], ignore_index=True)
    return counts


#: how failure_reasons counts (the table's footnote)
FAILURE_REASONS_NOTE = ("n: incorrect images with at least one failure of this kind; an image that fails in two ways "
                        "counts once under each kind.")


def failure_grid(rows: list[dict], generators: list[str]) -> list[ImageRef]:
    """One grid row per incorrect image, labelled with all that distinguishes it (generator, prompt, seed) and
    its first failure reason. Reasons differ per image, so lining generators up by caption put different seeds
    side by side."""
    aliases = generator_aliases(generators)
    return [ImageRef(r["image_key"], f"{aliases.get(g, g)}: {r['prompt']} (seed {r['seed']}) — "
                     f"{r['reason'].splitlines()[0] if r['reason'] else 'incorrect'}", group="incorrect image")
            for g in generators for r in rows if r["generator"] == g and not r["correct"]]


def _options(spec: RunSpec) -> dict[str, Any]:
    o = spec.options
    weights = str(o.get("weights", "pretrained"))
    if weights not in ("pretrained", RANDOM):
        raise UserInputError(f"--option weights={weights} is not understood; use weights=pretrained or weights=random "
                             "(give files with detector_weights=PATH and clip_weights=PATH)")
    detector = o.get("detector") or ("maskrcnn" if weights == RANDOM else "mask2former")
    return {
        "weights": weights,
        "detector": str(detector),
        "detector_weights": RANDOM if weights == RANDOM else str(o.get("detector_weights", "pretrained")),
        "clip_arch": str(o.get("clip_arch", "ViT-L-14")),
        "clip_pretrained": str(o.get("clip_pretrained", "openai")),
        "clip_weights": RANDOM if weights == RANDOM else str(o.get("clip_weights", "pretrained")),
        "thresholds": Thresholds(
            threshold=float(o.get("threshold", 0.3)), counting_threshold=float(o.get("counting_threshold", 0.9)),
            max_objects=int(o.get("max_objects", 16)), max_overlap=float(o.get("max_overlap", 1.0)),
            position_threshold=float(o.get("position_threshold", 0.1))),
    }


def prompt_metadata(spec: RunSpec) -> list[tuple[int, dict[str, Any]]]:
    """(official prompt index, metadata) of the prompts this run uses."""
    if spec.prompts in ("smoke", "geneval"):
        entries = list(enumerate(load_metadata()))
    else:
        path = Path(spec.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"GenEval metadata file {path} does not exist (use --prompts geneval)")
        entries = [(i, json.loads(line)) for i, line in enumerate(path.read_text("utf-8").splitlines()) if line.strip()]
        bad = [i for i, m in entries if not isinstance(m, dict) or "tag" not in m or "prompt" not in m]
        if bad:
            raise UserInputError(f"{path} line {bad[0] + 1} is not GenEval metadata (needs 'tag', 'prompt', 'include')")
    per_task = spec.options.get("per_task")
    if per_task is not None:
        seen: Counter[str] = Counter()
        kept = []
        for index, meta in entries:
            if seen[meta["tag"]] < int(per_task):
                kept.append((index, meta))
                seen[meta["tag"]] += 1
        entries = kept
    if spec.limit is not None:
        entries = entries[: spec.limit]
    return entries


def seeds_for(spec: RunSpec) -> list[int]:
    """``--seeds`` when several are given; else ``images_per_prompt`` consecutive seeds from the first."""
    if len(spec.seeds) > 1:
        return list(spec.seeds)
    n = int(spec.options.get("images_per_prompt", 4))
    if n < 1:
        raise UserInputError("--option images_per_prompt must be at least 1")
    return [spec.seeds[0] + i for i in range(n)]


@register_benchmark("geneval", description="GenEval compositional fidelity, official rules (paper Tables 1, 4)")
class GenEval(BaseBenchmark):
    options = {
        "weights": "pretrained or random",
        "detector": "mask2former or maskrcnn",
        "detector_weights": "detector weights file",
        "clip_arch": "open_clip architecture (default ViT-L-14)",
        "clip_pretrained": "open_clip pretrained tag (default openai)",
        "clip_weights": "CLIP weights file",
        "threshold": "detection score threshold (default 0.3)",
        "counting_threshold": "threshold for counting tasks (default 0.9)",
        "max_objects": "objects kept per class (default 16)",
        "max_overlap": "overlap allowed (default 1.0)",
        "position_threshold": "position margin (default 0.1)",
        "per_task": "prompts kept per task",
        "images_per_prompt": "images per prompt (default 4)",
        "export": "folder for GenEval's image layout",
    }

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        _options(spec)  # validate early, before any generation
        items = [WorkItem(f"geneval:{index}", meta["prompt"], seed)
                 for index, meta in prompt_metadata(spec) for seed in seeds_for(spec)]
        return [PlannedItem(g, item) for g in generators.canonical_list(spec.generators) for item in items]

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        return {}  # GenEval judges with a detector, not with IQA metrics

    def needs(self, spec: RunSpec) -> list:
        """The detector (and mmdetection) and CLIP the analysis loads: checked before any image is made."""
        from .needs import clip_needs, detector_needs

        opts = _options(spec)
        return [*detector_needs(opts["detector"], opts["detector_weights"]),
                *clip_needs(opts["clip_arch"], opts["clip_pretrained"], opts["clip_weights"])]

    # -- analysis ------------------------------------------------------------------------
    def _models(self, opts: dict[str, Any], device: str):
        from .clip import build_clip
        from .colors import ColorClassifier
        from .detectors import build_detector

        detector = build_detector(opts["detector"], opts["detector_weights"], device)
        clip = build_clip(opts["clip_arch"], opts["clip_pretrained"], opts["clip_weights"], device)
        return detector, ColorClassifier(clip)

    def analyze(self, ctx: AnalysisContext) -> Result:
        spec = ctx.spec
        opts = _options(spec)
        thresholds: Thresholds = opts["thresholds"]
        metadata = dict(prompt_metadata(spec))
        seeds = seeds_for(spec)
        config = {k: v for k, v in opts.items() if k != "thresholds"} | {"thresholds": thresholds.__dict__}
        models = None
        rows, missing = [], 0
        for planned, key in zip(ctx.plan, ctx.image_keys, strict=True):
            index = int(planned.item.prompt_id.split(":")[1])
            meta = metadata[index]
            if not ctx.store.has_image(key):
                missing += 1
                continue
            blob_key = content_key(EVAL_VERSION, key, config, meta)
            cached = ctx.store.get_blob(blob_key)
            if cached is None:
                if models is None:
                    models = self._models(opts, ctx.runtime.device)
                verdict = judge_image(ctx.store.load_image(key), str(ctx.store.image_path(key)), meta, *models,
                                      thresholds)
                ctx.store.put_blob(blob_key, "geneval-eval", json.dumps(verdict).encode())
            else:
                verdict = json.loads(cached)
            sample = seeds.index(planned.item.seed) if planned.item.seed in seeds else planned.item.seed
            row = {"filename": f"{index:05d}/samples/{sample:05d}.png", "tag": meta["tag"], "prompt": meta["prompt"],
                   "correct": verdict["correct"], "reason": verdict["reason"], "metadata": json.dumps(meta),
                   "details": verdict["details"]}
            rows.append({"generator": planned.generator, "prompt_index": index, "seed": planned.item.seed,
                         "image_key": key, **row})
        return self._result(ctx, rows, missing, opts)

    def _result(self, ctx: AnalysisContext, rows: list[dict[str, Any]], missing: int, opts: dict[str, Any]) -> Result:
        spec = ctx.spec
        generators = list(dict.fromkeys(p.generator for p in ctx.plan))
        smoke = opts["weights"] == RANDOM
        notes = [SMOKE_NOTE] if smoke else []
        if not smoke and opts["detector"] != "mask2former":
            notes.append(f"Detector {opts['detector']} is not GenEval's official Mask2Former: these numbers are NOT "
                         "comparable with published GenEval scores.")
        notes.append("Official GenEval rules (djghosh13/geneval, MIT): confidence > 0.3 (> 0.9 for counting), at most "
                     "16 objects per class, colour by CLIP zero-shot on masked crops over #999, position with a 0.1 "
                     "size margin. Overall = mean of the six task accuracies; a prompt is correct if any of its "
                     "images is.")
        if missing:
            notes.append(f"{missing} planned image(s) are missing (generation failed) and were left out.")
        result = Result(self.name, notes=notes)
        frame = pd.DataFrame(rows)
        table_rows, summaries = [], {}
        for g in generators:
            mine = [r for r in rows if r["generator"] == g]
            if not mine:
                continue
            s = summarize(mine)
            summaries[g] = s
            table_rows.append({"generator": g, **{t: s.tasks.get(t, np.nan) for t in TASKS}, "overall": s.overall,
                               "correct_images": s.correct_images, "correct_prompts": s.correct_prompts,
                               "n_images": s.n_images, "n_prompts": s.n_prompts})
        numeric = pd.DataFrame(table_rows).set_index("generator") if table_rows else pd.DataFrame()
        if not numeric.empty:
            columns = [t for t in TASKS if numeric[t].notna().any()] + ["overall"]
            from iqabench.analysis.decisions import level_table, wide_headline

            accuracy = accuracy_table(rows, generators, columns)
            note = accuracy_footnote(accuracy)
            result.add_table("geneval", level_table(accuracy, footnote=note, unit="prompt"))
            if len(accuracy):
                result.headlines.append(wide_headline(
                    "geneval", accuracy, row_key="generator", columns=columns, quantity="GenEval accuracy",
                    signed=False, higher_better=True, footnote=note, unit="prompt",
                    n_images=int(accuracy["n_images"].max())))
            result.tables["geneval_numeric"] = numeric
            from iqabench.analysis.plotting import heatmap_figure

            accuracy = result.tables["geneval"].set_index("generator")
            low_columns = [f"{c}_ci_low" for c in columns]
            has_ci = all(c in accuracy for c in low_columns) and np.isfinite(
                accuracy[low_columns].to_numpy(float)).any()
            result.figures["geneval_tasks"] = heatmap_figure(
                accuracy[columns], "GenEval accuracy (generators x tasks)", fmt=".2f", scale="sequential",
                vmin=0.0, vmax=1.0, low=accuracy[[f"{c}_ci_low" for c in columns]].set_axis(columns, axis=1),
                high=accuracy[[f"{c}_ci_high" for c in columns]].set_axis(columns, axis=1),
                caption="Share of correct images per GenEval task and the overall score (mean of the task "
                        "accuracies), per generator; sequential colours from 0 to 1"
                        + ("; brackets: 95% CI over prompts." if has_ci else "."))
        if rows:
            counts = failure_reason_counts(rows)
            if len(counts):
                result.add_table("failure_reasons", counts, footnote=FAILURE_REASONS_NOTE)
            result.tables["geneval_per_image"] = frame.drop(columns=["metadata", "details"])
            result.grids["failures"] = failure_grid(rows, generators)
        export = spec.options.get("export")
        if export:
            self._export(ctx, Path(str(export)), rows, generators)
            notes.append(f"Official layout and results.jsonl written under {export}.")
        result.summary = {
            "generators": generators, "smoke_run": smoke, "detector": opts["detector"],
            "comparable_with_published": (not smoke) and opts["detector"] == "mask2former",
            "n_images": len(rows), "n_missing": missing,
            "overall": {g: s.overall for g, s in summaries.items()},
            "correct_prompts": {g: s.correct_prompts for g, s in summaries.items()},
        }
        return result

    def _export(self, ctx: AnalysisContext, root: Path, rows: list[dict[str, Any]], generators: list[str]) -> None:
        for g in generators:
            folder = root / re.sub(r"[^A-Za-z0-9_.\-]+", "_", g)
            mine = [r for r in rows if r["generator"] == g]
            by_index: dict[int, list[dict[str, Any]]] = {}
            for r in mine:
                by_index.setdefault(r["prompt_index"], []).append(r)
            # Number samples as results.jsonl's filenames do (by seed), so a missing image leaves a gap
            # instead of shifting the later images onto the wrong filenames.
            write_official_folder(folder, ((i, json.loads(rs[0]["metadata"]),
                                            {int(Path(r["filename"]).stem): ctx.store.load_image(r["image_key"])
                                             for r in rs})
                                           for i, rs in by_index.items()))
            write_results_jsonl(folder / "results.jsonl", mine)


def judge_image(image, path: str | None, metadata: dict[str, Any], detector, colors, thresholds: Thresholds
                ) -> dict[str, Any]:
    """Detect, filter, evaluate one image: {correct, reason, details} (details as the official JSON text)."""
    raw = detector.detect(image, path)
    detected: dict[str, list[Detection]] = filter_detections(raw, metadata["tag"], thresholds)
    correct, reason = evaluate(detected, metadata, colors.for_image(image), thresholds.position_threshold)
    row = result_row("", metadata, detected, correct, reason)
    return {"correct": correct, "reason": reason, "details": row["details"]}


def accuracy_table(rows: list[dict[str, Any]], generators: list[str], columns: list[str]) -> pd.DataFrame:
    """Task accuracies and the overall score per generator with 95% CIs (the report's headline).

    Image correctness is clustered by prompt (GenEval draws several images per
    prompt), so a task's CI resamples its prompts; the overall score, the mean
    of task accuracies, resamples prompts within each task (stratified).
    """
    out = []
    for g in generators:
        mine = [r for r in rows if r["generator"] == g]
        if not mine:
            continue
        correct = np.array([float(bool(r["correct"])) for r in mine])
        prompts = np.array([r["prompt_index"] for r in mine])
        tags = np.array([r["tag"] for r in mine])
        row: dict[str, Any] = {"generator": g}
        methods = []
        for task in columns:
            est = (mean_of_strata_ci(correct, tags, prompts) if task == "overall"
                   else mean_ci(correct[tags == task], prompts[tags == task]))
            row.update({task: est.value, f"{task}_ci_low": est.ci_low, f"{task}_ci_high": est.ci_high})
            methods.append(est.method)
        n_prompts = len(set(prompts.tolist()))
        # each task's CI resamples that task's prompts only: the row's CIs rest on its smallest task's count
        per_task = [len(set(prompts[tags == t].tolist())) for t in columns if t != "overall" and (tags == t).any()]
        row.update({"n_images": len(mine), "n_prompts": n_prompts, "n_units": min(per_task or [n_prompts]),
                    "ci_method": "; ".join(dict.fromkeys(methods))})
        out.append(row)
    return pd.DataFrame(out)


def accuracy_footnote(table: pd.DataFrame) -> str:
    """How the accuracies' brackets were made; accuracies are levels (no test, no bold)."""
    from iqabench.analysis.decisions import unit_sentence

    methods = [m for text in table["ci_method"] for m in str(text).split("; ")] if len(table) else []
    return ("Accuracy = share of correct images per task; overall = mean of the task accuracies. "
            + describe_method(methods) + " "
            + unit_sentence("prompt", table["n_units"].to_numpy(float) if len(table) else None,
                            int(table["n_images"].max()) if len(table) else None)
            + " Accuracies are levels: no test, no bold (compare runs with `iqabench report A B`).")
