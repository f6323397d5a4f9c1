"""The user's real (reference) images and captions, and the ``fid-reference`` generator that serves them.

``--option reference=PATH`` is either a folder of images (png/jpg/jpeg/webp,
sorted by name; generation prompts then come from ``--prompts`` and CLIP-I is
not defined) or a CSV/TSV/JSONL file of MS-COCO-style caption/image pairs with
columns ``caption`` and ``image`` (or ``file_name``), image paths relative to the
file. Reference images enter the Store through the ``fid-reference`` generator
(it "generates" by reading the file), so the core caches them, scores them with
the IQA metrics for the top-k ranking, and resumes, exactly like generated ones.
Their cache key holds the file's path, size and modification time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import WorkItem, register_generator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
REFERENCE_GENERATOR = "fid-reference"
#: prompt-id prefix of the images ranked for the top-k subsets when they are not the ``reference`` images
TOPK_PREFIX = "topk:"


@dataclass(frozen=True)
class ReferencePair:
    image: Path
    caption: str | None


def load_reference(path: str | Path, limit: int | None = None) -> list[ReferencePair]:
    """Reference pairs from a folder of images or a CSV/TSV/JSONL of caption/image rows (first ``limit``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"reference {path} does not exist; pass --option reference=<image folder or "
                                "CSV/JSONL of caption,image pairs>")
    if path.is_dir():
        pairs = [ReferencePair(p, None) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        rows = _rows(path)
        pairs = []
        for number, row in enumerate(rows, 1):
            image = row.get("image") or row.get("file_name")
            caption = row.get("caption")
            if not image or caption is None:
                raise UserInputError(f"{path} row {number} needs an 'image' (or 'file_name') and a 'caption' value")
            pairs.append(ReferencePair((path.parent / str(image)).resolve(), str(caption)))
    if limit is not None:
        pairs = pairs[:limit]
    if len(pairs) < 2:
        raise UserInputError(f"reference {path} holds {len(pairs)} image(s); FID needs at least 2")
    missing = [p.image for p in pairs if not p.image.is_file()]
    if missing:
        raise FileNotFoundError(f"reference image {missing[0]} does not exist ({len(missing)} missing in all)")
    return pairs


def _rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text("utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix.lower() in (".csv", ".tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    raise UserInputError(f"reference file {path} must be .csv, .tsv or .jsonl (or pass an image folder)")


def reference_item(index: int, pair: ReferencePair, prefix: str = "reference:") -> WorkItem:
    """The work item whose 'generation' reads this reference image; its key changes when the file does."""
    stat = pair.image.stat()
    params = {"image": str(pair.image), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
              "captioned": pair.caption is not None}
    return WorkItem(f"{prefix}{index}", pair.caption or pair.image.name, 0, params)


class ReferenceImages:
    """A 'generator' that returns the reference image named in each item's params."""

    name = REFERENCE_GENERATOR
    # Real photos are data: a blank one is kept, not refused as a broken generation (iqabench.execution.image_checks).
    check_outputs = False

    def fingerprint(self) -> dict[str, Any]:
        return {"family": REFERENCE_GENERATOR, "version": 1}

    def baseline(self) -> str | None:
        return None

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        out = []
        for item in items:
            if "image" not in item.params:
                raise UserInputError(f"{REFERENCE_GENERATOR} items carry the image path in params['image']")
            with Image.open(item.params["image"]) as image:
                out.append(image.convert("RGB"))
        return out


@register_generator(REFERENCE_GENERATOR, description="Real reference images for FID top-k (reads files, no model)")
def _build_reference(spec, runtime) -> ReferenceImages:
    return ReferenceImages()
