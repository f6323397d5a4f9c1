"""score-dataset: folder/CSV/JSONL sources, Parquet + stats output, resume; training dataset from the table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from iqabench.adapters.iqa_adapter.cli import app
from iqabench.adapters.iqa_adapter.conditioning import load_stats
from iqabench.adapters.iqa_adapter.dataset import ScoredImageDataset, read_records, score_dataset


def write_images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8))
        image.filter(ImageFilter.GaussianBlur(i)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"caption {i}")
    return folder


def test_sources_folder_csv_jsonl(tmp_path):
    folder = write_images(tmp_path / "imgs", 3)
    recs = read_records(folder)
    assert [r.caption for r in recs] == ["caption 0", "caption 1", "caption 2"]
    pd.DataFrame({"image": ["imgs/img0.png", "imgs/img2.png"], "caption": ["a", "b"]}).to_csv(tmp_path / "d.csv")
    assert [r.caption for r in read_records(tmp_path / "d.csv")] == ["a", "b"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "imgs/img1.png", "caption": "c"}) + "\n")
    (rec,) = read_records(tmp_path / "d.jsonl")
    assert rec.open().size == (40, 48)
    with pytest.raises(ValueError, match="no 'image' column"):
        pd.DataFrame({"path": ["x"]}).to_csv(tmp_path / "bad.csv")
        read_records(tmp_path / "bad.csv")


def test_score_dataset_writes_table_and_stats_and_resumes(tmp_path):
    folder = write_images(tmp_path / "imgs", 6)
    out = tmp_path / "scored"
    table, stats_path = score_dataset(folder, ["entropy"], out, batch_size=2, resolution=32, part_rows=2,
                                      progress=False)
    frame = pd.read_parquet(table)
    assert len(frame) == 6 and set(frame.columns) >= {"id", "image", "caption", "entropy"}
    assert frame.set_index("id").loc["img0.png", "entropy"] > frame.set_index("id").loc["img5.png", "entropy"]
    stats = load_stats(stats_path)["entropy"]
    assert stats.mean == pytest.approx(frame["entropy"].mean())
    assert stats.std == pytest.approx(frame["entropy"].std(ddof=1))
    assert stats.percentile(50) == pytest.approx(frame["entropy"].median())
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) == 3
    parts[-1].unlink()  # as if killed before the last part: only those rows are scored again
    write_images(tmp_path / "imgs", 6)
    score_dataset(folder, ["entropy"], out, batch_size=2, resolution=32, part_rows=2, progress=False)
    again = pd.read_parquet(table)
    assert len(again) == 6 and sorted(again["id"]) == sorted(frame["id"])
    data = ScoredImageDataset.from_table(table, ["entropy"], resolution=32)
    row = data[0]
    assert row["pixel_values"].shape == (3, 32, 32) and row["pixel_values"].min() >= -1
    assert row["z"].item() == pytest.approx(stats.z(frame["entropy"][0]))
    assert row["original_size"].tolist() == [48, 40]


def test_cli_score_dataset(tmp_path):
    folder = write_images(tmp_path / "imgs", 2)
    result = CliRunner().invoke(app, ["score-dataset", str(folder), "--metrics", "entropy", "--out",
                                      str(tmp_path / "o"), "--resolution", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "stats.csv").is_file()


def test_score_dataset_reports_broken_images_and_shards(tmp_path):
    folder = write_images(tmp_path / "imgs", 5)
    (folder / "img2.png").write_bytes(b"not a png")
    out = tmp_path / "scored"
    # Two shards scored one after the other, as two processes would; the main process merges.
    score_dataset(folder, ["entropy"], out, batch_size=2, resolution=32, progress=False, shard=(1, 2))
    table, _ = score_dataset(folder, ["entropy"], out, batch_size=2, resolution=32, progress=False, shard=(0, 2))
    frame = pd.read_parquet(table)
    assert sorted(frame["id"]) == ["img0.png", "img1.png", "img3.png", "img4.png"]
    failures = pd.read_csv(out / "failures.csv")
    assert failures["id"].tolist() == ["img2.png"] and "unreadable" in failures["error"][0]
    assert {p.name.split("-")[1] for p in (out / "parts").glob("part-*.parquet")} <= {"r0", "r1"}
