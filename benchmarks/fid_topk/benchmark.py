"""The ``fid-topk`` benchmark: distribution fidelity against real images and their high-quality subsets (Table 5).

Plan: the reference images (through the ``fid-reference`` generator, so the
core caches and scores them) and, per generator, one image per reference caption
(seed = first ``--seeds``). Metrics: the run's NR IQA metrics score the
reference images only; their mean z-score ranks them for the top-k% subsets.
Analyse: torch-fidelity Inception features (cached per image in the Store),
FID against the full reference and each top-k% subset, Inception Score, KID,
and CLIP-T / CLIP-I through open_clip.

Options (``--option key=value``): ``reference`` (required: image folder or
CSV/TSV/JSONL of caption,image pairs: the captions generated from and the CLIP-I
partners), ``reference_stats`` (a torch-fidelity / clean-fid ``.npz`` of mu/sigma:
the "FID" column is against it, e.g. the full COCO train set; see ``stats``),
``topk_reference`` (folder or CSV of any size ranked for the top-k subsets and
the FID reference when no statistics are given; default ``reference``; not cut by
``--limit``), ``allow_small_topk`` (run a top-k subset smaller than the 2048
Inception features anyway), ``topk`` (percents, ``25,10``), ``weights``
(pretrained | random: random Inception and CLIP for a weights-free smoke run),
``inception_weights`` (path), ``clip_arch`` (ViT-L-14), ``clip_pretrained``
(openai), ``clip_weights`` (path), ``isc_splits`` (10), ``kid_subsets`` (100),
``kid_subset_size`` (1000).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from iqabench.benchmark import AnalysisContext, BaseBenchmark, ImageRef, PlannedItem, Result, register_benchmark
from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import GeneratorPool, WorkItem
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import metric_info

from ..geneval.clip import RANDOM
from .features import InceptionFeatures, fid, fid_bootstrap_ci, inception_identity, inception_score, kid, split
from .references import REFERENCE_GENERATOR, TOPK_PREFIX, load_reference, reference_item
from .stats import FEATURE_DIM, check_compatible, fid_against, load_statistics
from .topk import mean_z_scores, top_fraction

SMOKE_NOTE = ("WEIGHTS-FREE SMOKE RUN: Inception and CLIP have random weights (--option weights=random). Every "
              "FID, IS, KID and CLIP number in this report is meaningless; it only shows that the pipeline runs.")
LOWER_BETTER = ("FID", "KID")


def options(spec: RunSpec) -> dict[str, Any]:
    o = spec.options
    if "reference" not in o:
        raise UserInputError("fid-topk needs reference images: pass --option reference=<image folder or CSV/JSONL of "
                             "caption,image pairs>")
    weights = str(o.get("weights", "pretrained"))
    if weights not in ("pretrained", RANDOM):
        raise UserInputError(f"--option weights={weights} is not understood; use weights=pretrained or weights=random "
                             "(give files with inception_weights=PATH and clip_weights=PATH)")
    topk = [float(p) for p in str(o.get("topk", "25,10")).split(",") if p.strip()]
    for p in topk:
        if not 0 < p <= 100:
            raise UserInputError(f"--option topk percents must be in (0, 100], got {p:g}")
    return {
        "reference": str(o["reference"]), "topk": topk, "weights": weights,
        "reference_stats": str(o["reference_stats"]) if o.get("reference_stats") else None,
        "topk_reference": str(o.get("topk_reference") or o["reference"]),
        "allow_small_topk": _flag(o.get("allow_small_topk", False)),
        "inception_weights": RANDOM if weights == RANDOM else str(o.get("inception_weights", "pretrained")),
        "clip_arch": str(o.get("clip_arch", "ViT-L-14")), "clip_pretrained": str(o.get("clip_pretrained", "openai")),
        "clip_weights": RANDOM if weights == RANDOM else str(o.get("clip_weights", "pretrained")),
        "isc_splits": int(o.get("isc_splits", 10)), "kid_subsets": int(o.get("kid_subsets", 100)),
        "kid_subset_size": int(o.get("kid_subset_size", 1000)),
        "fid_bootstrap": _non_negative_int(o.get("fid_bootstrap", 0), "fid_bootstrap"),
    }


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise UserInputError(f"--option allow_small_topk={value} is not understood; use true or false")


def check_topk_sizes(n_ranked: int, topk: list[float], allowed: bool) -> None:
    """Refuse, before any work, a top-k subset with fewer images than Inception features (unless allowed)."""
    for p in topk:
        size = min(n_ranked, max(2, math.ceil(n_ranked * p / 100)))
        if size < FEATURE_DIM and not allowed:
            raise UserInputError(
                f"the top-{p:g}% subset of {n_ranked} ranked reference images holds {size} images, fewer than the "
                f"{FEATURE_DIM} Inception features, so its covariance is singular and its FID biased: rank a larger "
                "set with --option topk_reference=<folder or CSV> (Table 5 ranks the COCO training set) or pass "
                "--option allow_small_topk=true to run it anyway")


def _non_negative_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or str(value).strip() not in (str(number), f"{number}.0"):
        raise UserInputError(f"--option {name}={value!r} must be a whole number >= 0")
    return number


@register_benchmark("fid-topk", description="FID vs real images and their top-k% IQA subsets, IS, KID, CLIP-T/I "
                                            "(paper Table 5)")
class FidTopK(BaseBenchmark):
    options = {
        "reference": "real images: a folder or a CSV/JSONL of caption,image pairs (required)",
        "reference_stats": "precomputed Inception statistics (.npz with mu, sigma) for the FID column",
        "topk_reference": "images ranked for the top-k subsets (any size; default: reference)",
        "allow_small_topk": "true: run top-k subsets smaller than 2048 images (biased FID)",
        "topk": "top-k percents of the reference by IQA (default 25,10)",
        "weights": "pretrained or random",
        "inception_weights": "Inception weights file",
        "clip_arch": "open_clip architecture (default ViT-L-14)",
        "clip_pretrained": "open_clip pretrained tag (default openai)",
        "clip_weights": "CLIP weights file",
        "isc_splits": "Inception Score splits (default 10)",
        "kid_subsets": "KID subsets (default 100)",
        "kid_subset_size": "KID subset size (default 1000)",
        "fid_bootstrap": "resamples of the generated images for a 95% percentile CI of FID (default 0: none; "
                         "each resample costs one 2048-d matrix square root, see docs/statistics.md)",
    }

    def _prompts(self, spec: RunSpec, pairs) -> list[str]:
        if all(p.caption is not None for p in pairs):
            return [p.caption for p in pairs]
        from iqabench.io.prompts import load_prompts

        return [p.text for p in load_prompts(spec.prompts, limit=spec.limit, column=spec.options.get("prompt_column"))]

    def plan(self, spec: RunSpec, generators: GeneratorPool) -> list[PlannedItem]:
        if len(spec.seeds) > 1:  # refused before any work: a silent reduction to the first seed misreports the run
            raise UserInputError(f"fid-topk makes one image per caption (one seed), but --seeds gave "
                                 f"{len(spec.seeds)} seeds; pass one seed, e.g. --seeds {spec.seeds[0]}")
        opts = options(spec)
        pairs = load_reference(opts["reference"], spec.limit)
        ranked = pairs if opts["topk_reference"] == opts["reference"] else load_reference(opts["topk_reference"])
        check_topk_sizes(len(ranked), opts["topk"], opts["allow_small_topk"])
        if opts["reference_stats"] and opts["fid_bootstrap"]:
            raise UserInputError("--option fid_bootstrap compares resamples against the reference images' features; "
                                 "--option reference_stats gives only their mean and covariance: drop one of the two")
        if opts["reference_stats"]:  # a bad or mismatched file fails now, before generation
            check_compatible(load_statistics(opts["reference_stats"]), *inception_identity(opts["inception_weights"]))
        plan = [PlannedItem(REFERENCE_GENERATOR, reference_item(i, p)) for i, p in enumerate(pairs)]
        if ranked is not pairs:
            plan += [PlannedItem(REFERENCE_GENERATOR, reference_item(i, p, prefix=TOPK_PREFIX))
                     for i, p in enumerate(ranked)]
        prompts = self._prompts(spec, pairs)
        for g in generators.canonical_list(spec.generators):
            if g == REFERENCE_GENERATOR:
                raise UserInputError(f"{REFERENCE_GENERATOR} is the reference set, not a generator to evaluate")
            plan += [PlannedItem(g, WorkItem(f"reference:{i}", text, spec.seeds[0])) for i, text in enumerate(prompts)]
        return plan

    def needs(self, spec: RunSpec) -> list:
        """Inception, CLIP and the reference set the analysis loads: checked before any image is made."""
        from .needs import fid_topk_needs

        return fid_topk_needs(options(spec))

    def metrics_for(self, spec: RunSpec, plan: list[PlannedItem]) -> dict[str, list[int]]:
        everything = super().metrics_for(spec, plan)  # validates: NR metrics only
        if not everything:
            raise UserInputError("fid-topk ranks reference images by IQA score: pass --metrics (e.g. piqe,entropy)")
        ranked = _ranked_items(plan)
        return {m: [i for i, _ in ranked] for m in everything}

    def analyze(self, ctx: AnalysisContext) -> Result:
        spec = ctx.spec
        opts = options(spec)
        device = ctx.runtime.device
        present = [(p, k) for p, k in zip(ctx.plan, ctx.image_keys, strict=True) if ctx.store.has_image(k)]
        missing = len(ctx.plan) - len(present)
        ref = [(p, k) for p, k in present if p.generator == REFERENCE_GENERATOR
               and not p.item.prompt_id.startswith(TOPK_PREFIX)]
        ranked_keys = [k for _, (p, k) in _ranked_items(present, key=lambda x: x[0])]
        generators = [g for g in dict.fromkeys(p.generator for p in ctx.plan) if g != REFERENCE_GENERATOR]
        inception = InceptionFeatures(opts["inception_weights"], device, policy=ctx.runtime.batch)
        feats = inception.features(ctx.store, [k for _, k in present])
        ref_keys = [k for _, k in ref]
        metrics = list(ctx.metric_fingerprints)
        scores = {m: ctx.scores(m) for m in metrics}
        ranking = mean_z_scores(scores, {m: metric_info(m).lower_better for m in metrics}, ranked_keys)
        subsets = {p: top_fraction(ranking, p) for p in opts["topk"]}
        ref_pool, _ = split(np.stack([feats[k] for k in ranked_keys]))  # KID, and FID without statistics
        stats = None
        if opts["reference_stats"]:
            stats = load_statistics(opts["reference_stats"])
            check_compatible(stats, inception.fingerprint, inception.weights_sha256)
        sub_pools = {p: split(np.stack([feats[k] for k in keys]))[0] for p, keys in subsets.items()}

        clip = _clip(opts, device)
        ref_by_index = {p.item.prompt_id: k for p, k in ref}
        ref_emb = dict(zip(ref_keys, clip.encode_images([ctx.store.load_image(k) for k in ref_keys]), strict=True))
        paired = all(p.item.params.get("captioned") for p, _ in ref)  # CLIP-I needs real images of the same caption

        rows = []
        bootstrap_seconds = 0.0
        for g in generators:
            mine = [(p, k) for p, k in present if p.generator == g]
            if len(mine) < 2:
                rows.append({"generator": g, "n_images": len(mine)})
                continue
            keys = [k for _, k in mine]
            pool, logits = split(np.stack([feats[k] for k in keys]))
            row: dict[str, Any] = {"generator": g, "FID": fid_against(pool, stats) if stats else fid(pool, ref_pool)}
            if opts["fid_bootstrap"]:
                started = time.perf_counter()
                row["FID_ci_low"], row["FID_ci_high"] = fid_bootstrap_ci(pool, ref_pool, opts["fid_bootstrap"])
                bootstrap_seconds += time.perf_counter() - started
            for p, sub in sub_pools.items():
                row[f"FID top-{p:g}%"] = fid(pool, sub)
            row["IS"], row["IS_std"] = inception_score(logits, opts["isc_splits"])
            row["KID"], row["KID_std"] = kid(pool, ref_pool, opts["kid_subsets"], opts["kid_subset_size"])
            images = [ctx.store.load_image(k) for k in keys]
            img_emb = clip.encode_images(images)
            txt_emb = clip.encode_texts([p.item.prompt for p, _ in mine])
            row["CLIP-T"] = float((100 * (img_emb * txt_emb).sum(dim=1)).mean())
            if paired:
                pairs = [(i, ref_by_index[p.item.prompt_id]) for i, (p, _) in enumerate(mine)
                         if p.item.prompt_id in ref_by_index]
                ref_stack = torch.stack([ref_emb[r] for _, r in pairs])
                row["CLIP-I"] = float((100 * (img_emb[[i for i, _ in pairs]] * ref_stack).sum(dim=1)).mean())
            row["n_images"] = len(mine)
            rows.append(row)
        ranked = [(p, k) for p, k in present if k in ranking]
        result = self._result(ctx, opts, rows, generators, ranking, subsets, ranked, missing, inception, clip, stats)
        shrunk = {p: len(s) for p, s in subsets.items() if len(s) < FEATURE_DIM}
        if shrunk and not opts["allow_small_topk"]:  # the plan's size check counted images not yet scored
            result.notes.append(
                "Below the 2048-image floor after ranking: " + ", ".join(f"top-{p:g}% = {n}" for p, n in shrunk.items())
                + f" images, because only {len(ranking)} of {len(ranked_keys)} reference images have a score from "
                "every metric; those subsets' covariance is singular and their FID biased upwards.")
        if opts["fid_bootstrap"]:
            result.notes.append(
                f"FID brackets: 95% percentile bootstrap of the generated images ({opts['fid_bootstrap']} resamples "
                "with replacement, the reference set held fixed, so the interval covers the sampling of generated "
                "images only). Duplicated images in a resample shrink its covariance, so resampled FIDs sit above "
                "the estimate (FID is biased by set size): read the width, not the position; measured cost: "
                f"{bootstrap_seconds:.1f} s for {len(rows)} generator(s).")
        return result

    def _result(self, ctx, opts, rows, generators, ranking, subsets, ref, missing, inception, clip,
                stats) -> Result:
        smoke = opts["weights"] == RANDOM
        notes = [SMOKE_NOTE] if smoke else []
        full = (f"the reference statistics {stats.path} ({stats.num_features or 'an unstated number of'} images)"
                if stats else f"{len(ranking)} reference images")
        notes.append(
            f"FID against {full}; FID top-k% against the top-k% of {len(ranking)} ranked reference images: "
            + ", ".join(f"top-{p:g}% = {len(s)} images" for p, s in subsets.items())
            + f" ranked by the mean z-score of {', '.join(ctx.metric_fingerprints)} (sign flipped where lower is "
            "better). FID, IS and KID: torch-fidelity's Inception features and functions. CLIP-T = 100 x cosine "
            "(image, caption); CLIP-I = 100 x cosine (generated, real image of the same caption); open_clip "
            f"{clip.fingerprint}.")
        if len(ranking) < FEATURE_DIM and not stats:
            notes.append(f"Only {len(ranking)} reference images: with fewer than 2048 the 2048-d covariance is "
                         "singular and FID is strongly biased upwards; compare numbers only at equal set sizes "
                         "(the paper uses 10,000 MS-COCO pairs).")
        if missing:
            notes.append(f"{missing} planned image(s) are missing (generation or reading failed) and were left out.")
        result = Result(self.name, notes=notes)
        numeric = pd.DataFrame(rows).set_index("generator")
        shown = [c for c in numeric.columns if not c.endswith(("_std", "_ci_low", "_ci_high")) and c != "n_images"]
        from iqabench.analysis.decisions import level_table, wide_headline

        note = ("IS and KID: mean over splits/subsets, reported with their standard deviation over splits/subsets "
                "(the *_std columns: the spread of the statistic, not a CI); FID: "
                + ("95% percentile bootstrap CI over generated images (notes: cost)" if opts["fid_bootstrap"] else
                   "no CI unless --option fid_bootstrap=N") + ". Levels of one image set each: no test, no bold.")
        result.add_table("fid_topk_numeric", level_table(numeric, footnote=note, unit="image"))
        result.headlines.append(wide_headline(
            "fid_topk_numeric", numeric.reset_index(), row_key="generator", columns=shown,
            quantity="FID / IS / KID / CLIP scores", signed=False,
            higher_better={c: not c.startswith(LOWER_BETTER) for c in shown}, footnote=note, unit="image",
            n_images=int(numeric["n_images"].max()) if len(numeric) else None, n_units_column=None))
        rank = sorted(ranking, key=lambda k: -ranking[k])
        by_key = {k: p for p, k in ref}
        result.tables["reference_ranking"] = pd.DataFrame([
            {"rank": i + 1, "image": by_key[k].item.params["image"], "caption": by_key[k].item.prompt,
             "mean_z": ranking[k], **{f"top-{p:g}%": k in set(s) for p, s in subsets.items()}}
            for i, k in enumerate(rank)])
        result.grids["reference_best_and_worst"] = best_and_worst(rank, ranking, by_key)
        result.grids["samples"] = [ImageRef(k, p.item.prompt, group=p.generator)
                                   for p, k in zip(ctx.plan, ctx.image_keys, strict=True)
                                   if p.generator in generators and ctx.store.has_image(k)]
        result.summary = {
            "generators": generators, "smoke_run": smoke, "n_reference": len(ranking),
            "reference_stats": {"path": stats.path, "num_features": stats.num_features,
                                "inception_sha256": stats.inception_sha256} if stats else None,
            "topk_sizes": {f"{p:g}": len(s) for p, s in subsets.items()},
            "features_extracted": inception.n_extracted, "inception": inception.fingerprint, "clip": clip.fingerprint,
            "fid": {r["generator"]: r.get("FID") for r in rows},
        }
        return result


def _ranked_items(items: list, key=lambda p: p) -> list:
    """(index, item) of the reference images ranked for the top-k subsets: the ``topk_reference`` images when the
    run has them (their prompt ids start with ``topk:``), else the ``reference`` images."""
    refs = [(i, x) for i, x in enumerate(items) if key(x).generator == REFERENCE_GENERATOR]
    topk = [(i, x) for i, x in refs if key(x).item.prompt_id.startswith(TOPK_PREFIX)]
    return topk or refs


def best_and_worst(rank: list[str], ranking: dict[str, float], by_key: dict[str, Any]) -> list[ImageRef]:
    """Row i: the i-th best and the i-th worst reference image, from disjoint halves of the ranking.

    The report lines grids up by caption, so the caption is the rank pair rather than the image's caption (a
    prompt shared by a best and a worst image would otherwise put one image in both columns; captions are in
    the reference_ranking table). Each half has at most n // 2 images, so no image appears in both columns.
    """
    half = len(rank) // 2
    refs = []
    for i, (best, worst) in enumerate(zip(rank[:half], rank[::-1][:half], strict=True)):
        row = f"best #{i + 1} / worst #{i + 1}"
        refs.append(ImageRef(best, row, {"mean_z": ranking[best]}, group="best"))
        refs.append(ImageRef(worst, row, {"mean_z": ranking[worst]}, group="worst"))
    return refs


def _clip(opts: dict[str, Any], device: str):
    from ..geneval.clip import build_clip

    return build_clip(opts["clip_arch"], opts["clip_pretrained"], opts["clip_weights"], device)
