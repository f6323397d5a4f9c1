"""Image-text datasets: reading them, scoring them with IQA metrics (``score-dataset``), feeding training.

Sources: a folder of images (caption from a same-named ``.txt`` file, else
empty), a CSV or JSONL file with ``image`` and ``caption`` columns (paths
relative to the file), or a Hugging Face ``datasets`` dataset saved with
``save_to_disk`` (columns ``image`` and ``caption``/``text``).

``score_dataset`` writes ``scores.parquet`` (id, image, caption, one column per
metric) and ``stats.csv`` (mean, std, min, max and every whole percentile, in
the layout of the released ``CC3M_stats.csv``). It is resumable: scored rows
are appended in parts (``parts/part-*.parquet``, each written atomically) and
skipped on the next run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqabench.contracts.errors import UserInputError

from ...io.csv_safety import escape_frame
from .conditioning import MetricStats, load_stats, select_stats, write_stats_csv

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass(frozen=True)
class Record:
    id: str
    caption: str
    image: str | None = None          # a file path, or None when ``load`` is given
    load: Callable[[], Image.Image] | None = None

    def open(self) -> Image.Image:
        return (self.load() if self.load is not None else Image.open(self.image)).convert("RGB")


def read_records(source: str | Path) -> list[Record]:
    """The records of a folder, CSV, JSONL or ``save_to_disk`` dataset, in a stable order."""
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        return _hf_records(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {path}")
        return [Record(str(p.relative_to(path)), _sidecar_caption(p), str(p)) for p in files]
    if not path.is_file():
        raise FileNotFoundError(f"dataset {str(path)!r} is neither a folder nor a CSV/JSONL file")
    if path.suffix.lower() == ".csv":
        import pandas as pd

        rows = pd.read_csv(path).to_dict("records")
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise UserInputError(f"unsupported dataset file {path.name!r}: use a folder, .csv, .jsonl or "
                             f"a saved HF dataset")
    records = []
    for i, row in enumerate(rows):
        if "image" not in row:
            raise UserInputError(f"{path.name} row {i} has no 'image' column (columns: {sorted(row)})")
        image = Path(str(row["image"]))
        image = image if image.is_absolute() else path.parent / image
        caption = row.get("caption", row.get("text", ""))
        records.append(Record(str(row.get("id", row["image"])), "" if _missing(caption) else str(caption), str(image)))
    return records


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _sidecar_caption(image: Path) -> str:
    txt = image.with_suffix(".txt")
    return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""


def _hf_records(path: Path) -> list[Record]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else data[next(iter(data))]
    caption_col = "caption" if "caption" in data.column_names else "text" if "text" in data.column_names else None
    if "image" not in data.column_names:
        raise UserInputError(f"HF dataset at {path} has no 'image' column (columns: {data.column_names})")

    def loader(i: int) -> Callable[[], Image.Image]:
        return lambda: data[i]["image"]

    captions = data[caption_col] if caption_col else [""] * len(data)
    return [Record(str(i), captions[i] or "", None, loader(i)) for i in range(len(data))]


def _to_tensor(image: Image.Image, size: int | None) -> torch.Tensor:
    if size is not None:
        image = center_crop_resize(image, size)[0]
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def center_crop_resize(image: Image.Image, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Resize the short side to ``size`` then center-crop; returns the crop's top-left (for SDXL time ids)."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image.crop((left, top, left + size, top + size)), (top, left)


def _batches(items: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def score_dataset(source: str | Path, metrics: Sequence[str], out_dir: str | Path, *, runtime: Any = None,
                  batch_size: int = 16, resolution: int | None = 512, part_rows: int = 1024,
                  progress: bool = True, shard: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """Score every image with every metric; write ``scores.parquet`` and ``stats.csv`` under ``out_dir``.

    Images are center-cropped to ``resolution`` (None keeps sizes; then batch
    size 1 is used) so that scores describe what training will see. Under
    ``accelerate launch`` / ``torchrun`` each process scores the records whose
    id hashes to it, into its own part files; the main process merges them.
    Images that cannot be read or scored are listed in ``failures.csv``.
    """
    import pandas as pd

    from iqabench.execution.distributed import distributed_shard
    from iqabench.metrics import build_metric
    from iqabench.support.progress import ProgressBar

    state = None
    if shard is None:
        state, shard = distributed_shard()
    rank, world = shard
    out = Path(out_dir)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    records = read_records(source)
    done: set[str] = set()
    for part in sorted(parts.glob("part-*.parquet")):
        frame = pd.read_parquet(part)
        missing = [m for m in metrics if m not in frame.columns]
        if missing:
            raise UserInputError(f"{part} was scored with other metrics (lacks {missing}); use a new out_dir")
        done.update(frame["id"].astype(str))
    mine = [r for r in records if _owner(r.id, world) == rank]
    todo = [r for r in mine if r.id not in done]
    built = [build_metric(m, runtime) for m in metrics]
    step = batch_size if resolution is not None else 1
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    index = len(list(parts.glob(f"part-r{rank}-*.parquet")))
    bar = ProgressBar(total=len(mine), initial=len(mine) - len(todo), disable=not progress or rank != 0,
                      desc="score-dataset")
    for chunk in _batches(todo, step):
        readable, tensors = [], []
        for record in chunk:
            try:
                tensors.append(_to_tensor(record.open(), resolution))
                readable.append(record)
            except Exception as exc:  # a broken file is reported, not silently dropped
                failures.append({"id": record.id, "image": record.image or "", "error": f"unreadable: {exc}"})
        if readable:
            try:
                images = torch.stack(tensors)
                scores = {m.name: m.score(images).tolist() for m in built}
            except Exception as exc:
                failures += [{"id": r.id, "image": r.image or "", "error": f"scoring failed: {exc}"}
                             for r in readable]
                readable = []
            for j, r in enumerate(readable):
                rows.append({"id": r.id, "image": r.image or "", "caption": r.caption,
                             **{name: float(values[j]) for name, values in scores.items()}})
        bar.update(len(chunk))
        if len(rows) >= part_rows:
            _write_part(pd.DataFrame(rows), parts / f"part-r{rank}-{index:05d}.parquet")
            rows, index = [], index + 1
    if rows:
        _write_part(pd.DataFrame(rows), parts / f"part-r{rank}-{index:05d}.parquet")
    bar.close()
    if failures:
        _write_part(pd.DataFrame(failures), parts / f"failures-r{rank}.parquet")
    if state is not None:
        state.wait_for_everyone()
    table, stats_path = out / "scores.parquet", out / "stats.csv"
    if rank != 0:
        return table, stats_path
    frame = pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("part-*.parquet"))], ignore_index=True)
    frame = frame.drop_duplicates("id", keep="last").reset_index(drop=True)
    _write_part(frame, table)
    failed = [pd.read_parquet(p) for p in sorted(parts.glob("failures-r*.parquet"))]
    failed_frame = pd.concat(failed, ignore_index=True) if failed else pd.DataFrame(columns=["id", "image", "error"])
    failed_frame = failed_frame[~failed_frame["id"].astype(str).isin(set(frame["id"].astype(str)))]
    tmp = out / f".failures.{os.getpid()}.tmp"
    escape_frame(failed_frame).to_csv(tmp, index=False)  # file names and errors: no spreadsheet formulas
    os.replace(tmp, out / "failures.csv")
    if len(failed_frame):
        print(f"score-dataset: {len(failed_frame)} image(s) could not be scored; see {out / 'failures.csv'}")
    tmp = stats_path.with_name(f".stats.{os.getpid()}.tmp")
    tmp.write_text(write_stats_csv(compute_stats(frame, metrics)), encoding="utf-8")
    os.replace(tmp, stats_path)
    return table, stats_path


def _owner(record_id: str, world: int) -> int:
    import hashlib

    return int(hashlib.sha256(record_id.encode()).hexdigest()[:12], 16) % world


def _write_part(frame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def compute_stats(frame, metrics: Sequence[str]) -> dict[str, MetricStats]:
    """Mean, sample std and percentiles 1..99 (+ min/max as p0/p100) per metric."""
    stats = {}
    for m in metrics:
        values = frame[m].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 2:
            raise UserInputError(f"metric {m!r} has fewer than 2 finite scores; cannot compute its statistics")
        pcts = np.arange(0, 101)
        quantiles = dict(zip(pcts.astype(float).tolist(), np.percentile(values, pcts).tolist(), strict=True))
        stats[m] = MetricStats(m, float(values.mean()), float(values.std(ddof=1)), quantiles)
    return stats


class ScoredImageDataset(torch.utils.data.Dataset):
    """Training items from a ``scores.parquet`` table (or in-memory records) and the stats to z-score with."""

    def __init__(self, records: Sequence[Record], scores: Sequence[Sequence[float]], metrics: Sequence[str],
                 stats: dict[str, MetricStats] | None = None, resolution: int = 512):
        if len(records) != len(scores):
            raise ValueError("records and scores must have the same length")
        self.records = list(records)
        self.metrics = tuple(metrics)
        self.stats = select_stats(self.metrics, stats if stats is not None else load_stats())
        z = [[s.z(v) for s, v in zip(self.stats, row, strict=True)] for row in scores]
        self.z = torch.tensor(z, dtype=torch.float32)
        self.resolution = resolution

    @classmethod
    def from_table(cls, table: str | Path, metrics: Sequence[str], stats_path: str | Path | None = None,
                   resolution: int = 512) -> ScoredImageDataset:
        import pandas as pd

        frame = pd.read_parquet(table)
        missing = [m for m in metrics if m not in frame.columns]
        if missing:
            raise UserInputError(f"{table} has no column for {missing}; score the dataset with those metrics first")
        records = [Record(str(r["id"]), str(r["caption"]), str(r["image"])) for r in frame.to_dict("records")]
        stats_path = stats_path or Path(table).with_name("stats.csv")
        return cls(records, frame[list(metrics)].to_numpy().tolist(), metrics, load_stats(stats_path), resolution)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.records[i].open()
        w, h = image.size
        cropped, (top, left) = center_crop_resize(image, self.resolution)
        pixels = torch.from_numpy(np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        return {"pixel_values": pixels, "caption": self.records[i].caption, "z": self.z[i],
                "original_size": torch.tensor([h, w]), "crop_top_left": torch.tensor([top, left])}
