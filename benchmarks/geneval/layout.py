"""The official GenEval folder layout and ``results.jsonl``, read and written.

Official generation (``generation/diffusers_generate.py``) writes one folder per
prompt, ``<outdir>/<index:05d>/metadata.jsonl`` (one JSON object, the prompt's
metadata line) and ``samples/<n:05d>.png``; the official evaluator reads any
``<digits>/samples/<digits>.png`` and writes ``results.jsonl`` with the fields
filename, tag, prompt, correct, reason, metadata (JSON text), details (JSON
text: class -> [[x0, y0, x1, y1, score], ...]). Writing both lets a user run the
official scripts on our images; reading both imports existing GenEval outputs.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from iqabench.contracts.errors import UserInputError
from iqabench.io.json_lines import json_lines
from iqabench.store.atomic_io import atomic_write_bytes, atomic_write_text

RESULT_FIELDS = ("filename", "tag", "prompt", "correct", "reason", "metadata", "details")
_DIGITS = re.compile(r"^\d+$")
_SAMPLE = re.compile(r"^\d+\.png$")


def load_metadata() -> list[dict[str, Any]]:
    """The 553 vendored GenEval prompts with their requirements, in official order."""
    text = resources.files("iqabench").joinpath("data/geneval_evaluation_metadata.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_object_names() -> list[str]:
    """The 80 COCO class names in the detector's label order (GenEval's ``object_names.txt``)."""
    text = resources.files("iqabench").joinpath("data/geneval_object_names.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Sample:
    """One image of an official folder: prompt index, sample number, path, and the prompt's metadata."""

    index: int
    sample: int
    path: Path
    metadata: dict[str, Any]


def write_official_folder(root: str | Path, entries: Iterable[tuple[int, Mapping[str, Any],
                                                                     Sequence[Image.Image] | Mapping[int, Image.Image]]]
                          ) -> Path:
    """Write ``(prompt index, metadata, images)`` as ``root/<index:05d>/{metadata.jsonl, samples/<n:05d>.png}``.

    ``images`` is a sequence (numbered 0, 1, ...) or a mapping sample number -> image, so that a prompt with a
    missing image keeps the other images' numbers (and ``results.jsonl``'s filenames stay true).
    """
    root = Path(root)
    for index, metadata, images in entries:
        folder = root / f"{int(index):05d}"
        atomic_write_text(folder / "metadata.jsonl", json.dumps(dict(metadata)))
        numbered = images.items() if isinstance(images, Mapping) else enumerate(images)
        for n, image in numbered:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(folder / "samples" / f"{n:05d}.png", buffer.getvalue())
    return root


def read_official_folder(root: str | Path) -> list[Sample]:
    """Every sample of an official folder, sorted by (prompt index, sample number)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GenEval image folder {root} does not exist")
    samples: list[Sample] = []
    for sub in root.iterdir():
        if not (sub.is_dir() and _DIGITS.match(sub.name)):
            continue
        meta_path = sub / "metadata.jsonl"
        if not meta_path.is_file():
            raise FileNotFoundError(f"GenEval folder {sub} has no metadata.jsonl")
        try:
            metadata = json.loads(meta_path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{meta_path} is not one JSON object: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(metadata, dict) or "tag" not in metadata or "prompt" not in metadata:
            raise UserInputError(f"{meta_path} lacks the 'tag' and 'prompt' fields of GenEval metadata")
        sample_dir = sub / "samples"
        for image in sample_dir.iterdir() if sample_dir.is_dir() else ():
            if image.is_file() and _SAMPLE.match(image.name):
                samples.append(Sample(int(sub.name), int(image.stem), image, metadata))
    if not samples:
        raise UserInputError(f"no GenEval samples found under {root} (expected <index>/samples/<n>.png)")
    return sorted(samples, key=lambda s: (s.index, s.sample))


def write_results_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows with exactly the official fields, one JSON object per line."""
    lines = []
    for row in rows:
        missing = [f for f in RESULT_FIELDS if f not in row]
        if missing:
            raise UserInputError(f"result row lacks the official field(s) {', '.join(missing)}")
        lines.append(json.dumps({f: row[f] for f in RESULT_FIELDS}))
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


def read_results_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an official (or our) ``results.jsonl``; ``metadata`` and ``details`` stay JSON text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GenEval results file {path} does not exist")
    def bad_line(number: int, reason: str) -> ValueError:
        return ValueError(f"{path} line {number} is not JSON: {reason}")

    rows = []
    for number, row in json_lines(path.read_text("utf-8"), bad_line):
        missing = [f for f in ("tag", "correct", "metadata") if f not in row]
        if missing:
            raise UserInputError(f"{path} line {number} lacks the field(s) {', '.join(missing)}")
        rows.append(row)
    return rows
