"""Export a blind pair-voting study as a static HTML page plus a manifest.

Written to ``<dest>/``::

    index.html     the page: shows pairs, records left / right / equal, keeps progress in localStorage,
                   offers the votes as a JSON download (and in a text box to copy)
    images/*.png   the images shown (copied from the Store; verification images are made here)
    study.json     the manifest: which condition is on which side of every pair, which pairs are
                   verification pairs and their expected answer. Never shown to participants.

The page carries only opaque image names and pair ids, so participants cannot
tell which model made which image. Pair order and sides are shuffled with a
seed (same seed -> same page). Verification pairs put an image next to a
strongly degraded copy of itself (blur + noise); choosing the degraded one or
"equal" fails the check (paper Sec. 15: participants who fail are excluded).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import itertools
import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from iqabench.contracts.errors import UserInputError
from iqabench.io.templating import html_environment
from iqabench.store.atomic_io import atomic_write_text
from iqabench.store.store import Store, content_key

STUDY_FORMAT = "iqabench-study/v1"
TEMPLATE = Path(__file__).with_name("page.html.j2")
SCRIPT = Path(__file__).with_name("page.js")


def page_csp(script: str) -> str:
    """Only our own script (by hash) runs; images load from the page's folder (file:) only."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return ("default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; "
            f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")


def condition_label(generator: str, params: dict) -> str:
    """What a participant's vote is about: the generator spec plus the item params that changed the image."""
    if not params:
        return generator
    return generator + " " + " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def collect_conditions(store: Store, run_ids: Sequence[str]) -> pd.DataFrame:
    """Every cached image of the given runs as (condition, prompt_id, prompt, seed, image_key) rows.

    The planned items and their image keys are read from each run's ``run.json`` (``planned``, written by the
    runner): nothing is re-planned, so a run made on a GPU exports on a CPU machine (whose ``auto`` dtype would
    give other keys), and no metric or generator weights are needed. Any benchmark whose plan has several
    generators or params per prompt and seed (relgain, scores, condition-sweep, ...) can feed a study.
    """
    rows = []
    for run_id in run_ids:
        manifest = store.read_run_json(run_id)
        planned = manifest.get("planned")
        if not isinstance(planned, list):
            raise UserInputError(f"run {run_id!r} was written by an older iqabench whose run.json does not list its "
                                 "planned images; re-run the same `iqabench run` command once (cached images are "
                                 "reused, nothing is regenerated) and export again")
        for record in planned:
            if store.has_image(record["image_key"]):
                rows.append({"condition": condition_label(record["generator"], dict(record.get("params") or {})),
                             "prompt_id": record["prompt_id"], "prompt": record["prompt"],
                             "seed": int(record["seed"]), "image_key": record["image_key"]})
    frame = pd.DataFrame(rows, columns=["condition", "prompt_id", "prompt", "seed", "image_key"])
    return frame.drop_duplicates(["condition", "prompt_id", "seed"]).reset_index(drop=True)


def degrade(image: Image.Image, seed: int) -> Image.Image:
    """An obviously worse copy: strong blur plus heavy noise (the verification pair's wrong answer)."""
    radius = max(2.0, min(image.size) / 24)
    blurred = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 40.0, blurred.shape)
    return Image.fromarray(np.clip(blurred + noise, 0, 255).astype(np.uint8))


def export_study(store: Store, images: pd.DataFrame, dest: str | os.PathLike[str], *, n_verification: int = 4,
                 seed: int = 0, max_pairs: int | None = None, conditions: Sequence[str] | None = None,
                 title: str = "Which image looks better?", run_ids: Sequence[str] = ()) -> Path:
    """Write the study page, its images and ``study.json`` into ``dest``; return the page's path.

    ``images`` is what :func:`collect_conditions` returns. Every pair of
    conditions of the same prompt and seed becomes one question (at most
    ``max_pairs``, sampled with ``seed``); ``n_verification`` check pairs are mixed in.
    """
    import markupsafe

    if conditions:
        unknown = sorted(set(conditions) - set(images.condition))
        if unknown:
            raise UserInputError(f"condition(s) {', '.join(unknown)} not among the exported images; known: "
                                 f"{', '.join(sorted(set(images.condition)))}")
        images = images[images.condition.isin(conditions)]
    rng = random.Random(seed)
    questions = []
    for (prompt_id, seed_value), group in images.groupby(["prompt_id", "seed"], sort=True):
        rows = list(group.itertuples(index=False))
        for a, b in itertools.combinations(rows, 2):
            left, right = (a, b) if rng.random() < 0.5 else (b, a)
            questions.append({"prompt_id": prompt_id, "prompt": a.prompt, "seed": int(seed_value),
                              "left": left.condition, "right": right.condition,
                              "left_key": left.image_key, "right_key": right.image_key, "verification": False})
    if not questions:
        raise UserInputError("no pair to vote on: the images must include at least two conditions of the same prompt "
                             "and seed (e.g. a relgain or condition-sweep run)")
    if max_pairs is not None and len(questions) > max_pairs:
        questions = rng.sample(questions, max_pairs)

    dest = Path(dest)
    image_dir = dest / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for key in {q["left_key"] for q in questions} | {q["right_key"] for q in questions}:
        shutil.copyfile(store.image_path(key), image_dir / f"{key}.png")
    pool = sorted({q["left_key"] for q in questions} | {q["right_key"] for q in questions})
    for i in range(n_verification):
        original = pool[rng.randrange(len(pool))]
        worse = content_key("study-check/v1", original, seed, i)
        degrade(store.load_image(original), seed + i).save(image_dir / f"{worse}.png")
        source = images[images.image_key == original].iloc[0]
        good_left = rng.random() < 0.5
        questions.append({"prompt_id": source.prompt_id, "prompt": source.prompt, "seed": int(source.seed),
                          "left": "check:original" if good_left else "check:degraded",
                          "right": "check:degraded" if good_left else "check:original",
                          "left_key": original if good_left else worse, "right_key": worse if good_left else original,
                          "verification": True, "expected": "left" if good_left else "right"})
    rng.shuffle(questions)
    study_id = content_key("study/v1", [(q["left_key"], q["right_key"]) for q in questions])[:12]
    for index, question in enumerate(questions):
        question["pair_id"] = f"q{index:04d}"

    manifest = {
        "format": STUDY_FORMAT, "study_id": study_id, "title": title, "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "store": str(store.root), "runs": list(run_ids),
        "conditions": sorted(set(images.condition)), "pairs": questions,
    }
    atomic_write_text(dest / "study.json", json.dumps(manifest, indent=2))
    page_pairs = [{"pair_id": q["pair_id"], "prompt": q["prompt"], "left": f"images/{q['left_key']}.png",
                   "right": f"images/{q['right_key']}.png"} for q in questions]
    env = html_environment()
    script = SCRIPT.read_text("utf-8")
    page = env.from_string(TEMPLATE.read_text("utf-8")).render(
        title=title, csp=page_csp(script), script=markupsafe.Markup(script),
        data={"study_id": study_id, "title": title, "pairs": page_pairs})
    atomic_write_text(dest / "index.html", page)
    return dest / "index.html"
