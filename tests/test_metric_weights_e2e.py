"""pyiqa metrics from pyiqa's real weight cache, offline: weight status, building, scoring and the CLI commands.

No ``weights=random`` and no ``[path=...]``: every file is looked up where pyiqa, timm, torchvision and CLIP
look it up, in the random-weight mirror of ``tests/hub_mirror/pyiqa_cache.py`` (the session's shared ``hub_mirror``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from iqabench.metrics import build_metric, metric_info, pyiqa_weights_status

sys.path.insert(0, str(Path(__file__).parent))
from hub_mirror.pyiqa_cache import PYIQA_METRICS, MirrorDirs, use_mirror  # noqa: E402

LEARNED = [m for m in PYIQA_METRICS if m != "ssim"]


@pytest.fixture(scope="session")
def pyiqa_mirror(hub_mirror) -> MirrorDirs:
    """pyiqa's part of the session's shared hub mirror (files another module already wrote are kept, not rewritten)."""
    started = time.perf_counter()
    hub_mirror.ensure("pyiqa")
    print(f"\npyiqa mirror written in {time.perf_counter() - started:.1f} s")
    return MirrorDirs(hub_mirror.root)


@pytest.fixture
def mirror(pyiqa_mirror):
    with use_mirror(pyiqa_mirror) as dirs:
        yield dirs


def _cli(dirs: MirrorDirs, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: the environment alone points every library at the mirror."""
    env = {**os.environ, **dirs.env(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "iqabench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _cli_here(dirs: MirrorDirs, *args: str) -> str:
    """The CLI in this process (saves a ~10 s interpreter start per command on CI)."""
    from typer.testing import CliRunner

    from iqabench.cli import app

    with use_mirror(dirs):
        result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    return result.output


def test_status_says_missing_before_the_mirror_naming_the_file_and_where(tmp_path):
    with use_mirror(MirrorDirs(tmp_path / "empty")) as empty:
        for name in LEARNED:
            present, detail = pyiqa_weights_status(name)
            assert present is False, (name, detail)
            assert "is not in" in detail and str(empty.root) in detail and "\n" not in detail, detail
        assert pyiqa_weights_status("ssim") == (True, "no download needed")


def test_status_says_present_after_the_mirror(mirror):
    for name in PYIQA_METRICS:
        present, detail = pyiqa_weights_status(name)
        assert present is True, (name, detail)


def test_metric_missing_only_its_backbone_is_reported_missing_with_the_backbone_file(pyiqa_mirror, tmp_path):
    partial = MirrorDirs(tmp_path / "partial")
    for source in [*pyiqa_mirror.pyiqa.iterdir()]:  # every pyiqa file, no backbone at all
        partial.pyiqa.mkdir(parents=True, exist_ok=True)
        os.symlink(source, partial.pyiqa / source.name)
    with use_mirror(partial):
        present, detail = pyiqa_weights_status("topiq_nr")
        assert present is False and "timm/resnet50.a1_in1k" in detail and "model.safetensors" in detail
        assert "cfanet" not in detail  # the pyiqa file itself is there
        present, detail = pyiqa_weights_status("dbcnn")
        assert present is False and "vgg16-397923af.pth" in detail
        assert detail.count("is not in") == 1 and str(partial.checkpoints) in detail
        present, detail = pyiqa_weights_status("laion_aes")
        assert present is False and "ViT-L-14.pt" in detail and str(partial.home / ".cache" / "clip") in detail


@pytest.mark.parametrize("name", PYIQA_METRICS)
def test_every_listed_metric_builds_and_scores_offline(mirror, name):
    metric = build_metric(name)
    network = metric.module.net
    # Test-time crop counts only (the weights and layers are the real ones): MANIQA scores 20 random 224-px crops
    # with a ViT-B/8 and HyperIQA 25, minutes on a CI CPU.
    if name == "maniqa":
        network.test_sample = 1
    if name == "hyperiqa":
        network.num_crop = 1
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    refs = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    scores = metric.score(images, refs if metric_info(name).mode == "FR" else None)
    assert scores.shape == (2,) and torch.isfinite(scores).all(), (name, scores)


def _image_folder(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = (torch.rand(64, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def test_score_dataset_with_topiq_nr_writes_its_outputs(pyiqa_mirror, tmp_path):
    folder = _image_folder(tmp_path / "images")
    out = tmp_path / "scored"
    _cli_here(pyiqa_mirror, "score-dataset", str(folder), "--metrics", "topiq_nr", "--out", str(out),
         "--resolution", "64", "--device", "cpu")
    table = pd.read_parquet(out / "scores.parquet")
    assert len(table) == 3 and table["topiq_nr"].notna().all()
    assert (out / "stats.csv").is_file()


def test_cli_lists_the_mirrored_metrics_as_present(pyiqa_mirror, tmp_path):
    listing = _cli(pyiqa_mirror, "list", "metrics").stdout
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines() if line.count("│") >= 3}
    for name in PYIQA_METRICS:
        ok = "present" in rows.get(name, "") or (name == "ssim" and "no download needed" in rows.get(name, ""))
        assert name in rows and ok and "missing" not in rows[name], rows.get(name)


def test_copying_the_mirror_elsewhere_keeps_it_loadable(pyiqa_mirror, tmp_path):
    """The layout is self-contained: a copied cache (as a user copies from a connected machine) still loads."""
    copy = MirrorDirs(tmp_path / "copy")
    shutil.copytree(pyiqa_mirror.pyiqa, copy.pyiqa)
    with use_mirror(copy):
        assert pyiqa_weights_status("cnniqa")[0] is True
        assert torch.isfinite(build_metric("cnniqa").score(torch.rand(1, 3, 64, 64))).all()
