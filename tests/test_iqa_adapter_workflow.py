"""The researcher's path through the CLI: score a dataset, train an adapter, benchmark it against its base."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from iqabench.api import execute
from iqabench.cli import app
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner


def test_score_train_and_relgain_through_the_cli(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        picture = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
        picture.filter(ImageFilter.GaussianBlur(i % 3)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"a photo number {i}")
    runner = CliRunner()

    scored = runner.invoke(app, ["score-dataset", str(images), "--metrics", "entropy", "--out",
                                 str(tmp_path / "scored"), "--batch-size", "3", "--resolution", "64",
                                 "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert (tmp_path / "scored" / "scores.parquet").is_file() and (tmp_path / "scored" / "stats.csv").is_file()

    trained = runner.invoke(app, ["train", "iqa-adapter", "--scores", str(tmp_path / "scored" / "scores.parquet"),
                                  "--metrics", "entropy", "--base", "tiny-sd", "--out", str(tmp_path / "adapter"),
                                  "--max-steps", "2", "--batch-size", "2", "--resolution", "64",
                                  "--save-every", "2"])
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "adapter" / "checkpoint-2" / "adapter.safetensors"
    assert checkpoint.is_file()

    spec = RunSpec("relgain", [f"iqa-adapter:{checkpoint}"], metrics=["piqe", "entropy"], limit=2, seeds=[0],
                   batch_size=2)
    outcome = execute(Runner(spec, tmp_path / "store"))
    table = outcome.result.tables["relgain"]
    assert table["baseline"].iloc[0].startswith("tiny-sd[")  # chosen automatically from the checkpoint
    assert (table["n"] == 2).all() and np.isfinite(table["relgain"]).all()
    assert outcome.report.is_file()
