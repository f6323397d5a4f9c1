"""The README's generator-side commands, end to end, against the hub mirror: no ``[path=...]``, no ``weights=random``.

Each command runs the real CLI in a subprocess whose environment points the Hugging Face cache, torch hub,
pyiqa's cache and ``IQABENCH_ADAPTER_DIR`` at tests/hub_mirror's files, with ``HF_HUB_OFFLINE=1``: every
weight file is found and loaded by the same code as on a researcher's machine (random weights in the real
layouts; numbers mean nothing). Only sizes are scaled down through ordinary spec options (2 steps, 64 px).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SMALL = "steps=2,height=64,width=64"
PARTS = ("hf", "adapters", "pyiqa:topiq_nr", "pyiqa:laion_aes")


@pytest.fixture(scope="module")
def mirror(hub_mirror):
    return hub_mirror.ensure(*PARTS)


def iqabench(mirror, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m iqabench ...`` against the mirror; fail with its output when it does not exit 0."""
    proc = subprocess.run([sys.executable, "-m", "iqabench", *args], cwd=cwd, env=mirror.environ(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"iqabench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    return proc


def finished_run(out: Path, benchmark: str) -> Path:
    """The single run folder of ``benchmark`` under ``out``, checked complete with a report."""
    [run_dir] = sorted((out / "runs").glob(f"{benchmark}-*"))
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "complete"
    report = (run_dir / "report.html").read_text("utf-8")
    assert "<html" in report.lower()
    return run_dir


def run_args(benchmark: str, out: Path, *generators: str, metrics: str | None = None,
             limit: int | None = 1) -> list[str]:
    args = ["run", benchmark, "--seeds", "0", "--batch-size", "1", "--device", "cpu", "--dtype", "fp32",
            "--out", str(out)] + (["--limit", str(limit)] if limit else [])
    for generator in generators:
        args += ["--generator", generator]
    return args + (["--metrics", metrics] if metrics else [])


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_relgain_iqa_adapter_preset_with_topiq_and_laion_aes(mirror, tmp_path):
    """`run relgain --generator iqa-adapter:topiq --metrics topiq_nr,laion_aes`: preset file from
    IQABENCH_ADAPTER_DIR, SDXL from the HF cache, both metrics from pyiqa's cache."""
    out = tmp_path / "out"
    iqabench(mirror, *run_args("relgain", out, f"iqa-adapter:topiq[{SMALL}]", metrics="topiq_nr,laion_aes"),
             cwd=tmp_path)
    run_dir = finished_run(out, "relgain")
    table = pd.read_csv(run_dir / "results" / "relgain.csv")
    assert sorted(table["metric"]) == ["laion_aes", "topiq_nr"]
    assert (table["n"] == 1).all() and table["relgain"].notna().all()
    assert set(table["baseline"]) == {"sdxl[guidance_scale=7.5,height=64,steps=2,width=64]"}


def test_train_acpo_then_relgain_of_sdxl_guidance_and_acpo(mirror, tmp_path):
    """`train acpo --evaluator topiq_nr` (sd15 from the HF cache, one step), then one RelGain run of `sdxl`,
    `guidance:topiq_nr[base=sdxl]` and the trained `acpo:<folder>`, each against its own baseline."""
    lora = tmp_path / "acpo"
    iqabench(mirror, "train", "acpo", "--data", str(_images(tmp_path / "data", 2)), "--out", str(lora),
             "--base", "sd15", "--evaluator", "topiq_nr", "--max-steps", "1", "--resolution", "64",
             "--save-every", "1", cwd=tmp_path)
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((lora / "lora.json").read_text())["base"] == "sd15"
    out = tmp_path / "out"
    generators = [f"sdxl[{SMALL}]", f"guidance:topiq_nr[alpha=5,base=sdxl,{SMALL}]", f"acpo:{lora}[{SMALL}]"]
    iqabench(mirror, *run_args("relgain", out, *generators, metrics="topiq_nr"), cwd=tmp_path)
    table = pd.read_csv(finished_run(out, "relgain") / "results" / "relgain.csv").set_index("generator")
    assert len(table) == 3 and table["relgain"].notna().all()
    baselines = {g.split("[")[0].split(":")[0]: b for g, b in table["baseline"].items()}
    assert baselines["sdxl"] == "sdxl[guidance_scale=1.0,height=64,steps=2,width=64]"
    assert baselines["guidance"] == "sdxl[guidance_scale=7.5,height=64,steps=2,width=64]"
    assert baselines["acpo"] == "sd15[guidance_scale=7.5,height=64,steps=2,width=64]"


def test_train_ipce_on_open_clip_then_acpo_with_it(mirror, tmp_path):
    """ACPO's IPCE evaluator: `train ipce` on open_clip ViT-B-32/openai from its HF snapshot (the official IPCE
    CLIP), then `train acpo --evaluator ipce:<file>` on sd15 from the HF cache."""
    mirror.ensure("clip:ViT-B-32")
    images = _images(tmp_path / "rated", 4)
    rows = [f"{images / f'{i}.png'},a photo number {i},{1 + i}" for i in range(4)]
    (tmp_path / "mos.csv").write_text("path,prompt,score\n" + "\n".join(rows) + "\n")
    ipce = tmp_path / "ipce"
    proc = iqabench(mirror, "train", "ipce", "--table", "mos.csv", "--out", str(ipce), "--epochs", "2",
                    "--val-fraction", "0", "--device", "cpu", cwd=tmp_path)
    [weights] = [p for p in ipce.iterdir() if p.suffix == ".safetensors"]
    assert f"--evaluator ipce:{weights}" in proc.stdout.replace("\n", "")
    lora = tmp_path / "acpo"
    iqabench(mirror, "train", "acpo", "--data", str(images), "--out", str(lora), "--base", "sd15",
             "--evaluator", f"ipce:{weights}", "--max-steps", "1", "--resolution", "64", "--save-every", "1",
             "--x0-mode", "one-step", cwd=tmp_path)
    assert (lora / "pytorch_lora_weights.safetensors").is_file()


def test_condition_sweep_of_the_iqa_adapter_preset(mirror, tmp_path):
    out = tmp_path / "out"
    iqabench(mirror, *run_args("condition-sweep", out, f"iqa-adapter:topiq[{SMALL}]", metrics="topiq_nr"),
             "--option", "targets=10,90", cwd=tmp_path)
    run_dir = finished_run(out, "condition-sweep")
    assert any(run_dir.joinpath("results").glob("*.csv"))


def test_fr_distances_of_the_iqa_adapter_preset_with_lpips_and_dists(mirror, tmp_path):
    """`run fr-distances --generator iqa-adapter:topiq --metrics lpips,dists`: the preset over SDXL from the HF
    cache, LPIPS/DISTS heads from pyiqa's cache and their AlexNet/VGG16 backbones from torch hub's checkpoints."""
    mirror.ensure("pyiqa:lpips", "pyiqa:dists")
    out = tmp_path / "out"
    iqabench(mirror, *run_args("fr-distances", out, f"iqa-adapter:topiq[{SMALL}]", metrics="lpips,dists"),
             "--option", "targets=1,99", cwd=tmp_path)
    run_dir = finished_run(out, "fr-distances")
    matrix = pd.read_csv(run_dir / "results" / "fr_matrix.csv")
    assert set(matrix["metric"]) == {"lpips", "dists"}
    conditions = {"baseline", "p1", "p99"}
    for metric, table in matrix.groupby("metric"):
        assert {str(c) for c in table["image"]} == conditions and {str(c) for c in table["reference"]} == conditions
        assert table["mean_distance"].notna().all(), (metric, table)
        same = table["image"].astype(str) == table["reference"].astype(str)
        # An image against itself is 0; different images differ (random heads: the sign means nothing).
        assert (table.loc[same, "mean_distance"].abs() < 1e-6).all(), (metric, table)
        assert (table.loc[~same, "mean_distance"] != 0).all(), (metric, table)
    report = (run_dir / "report.html").read_text("utf-8")
    assert "fr_matrix" in report and "Metrics used: lpips, dists" in report


def test_adversarial_gradcam_on_topiq_nr_over_sdxl(mirror, tmp_path):
    """`run adversarial-gradcam --option guided_metrics=topiq_nr --option base=sdxl`: guidance on topiq_nr over
    SDXL from the HF cache, Grad-CAM on the layers of topiq_nr's real architecture (CFANet's ResNet-50)."""
    out = tmp_path / "out"
    iqabench(mirror, *run_args("adversarial-gradcam", out, f"sdxl[{SMALL}]", metrics="topiq_nr"),
             "--option", "guided_metrics=topiq_nr", "--option", f"base=sdxl[{SMALL}]", "--option", "alpha=5",
             "--option", "cam_items=1", cwd=tmp_path)
    run_dir = finished_run(out, "adversarial-gradcam")
    transfer = pd.read_csv(run_dir / "results" / "transfer_matrix.csv")
    assert "guidance on topiq_nr" in transfer.to_string()
    cam = pd.read_csv(run_dir / "results" / "cam_shift.csv")
    assert len(cam) >= 1 and cam["cam_shift"].notna().all()
    report = (run_dir / "report.html").read_text("utf-8")
    assert "Grad-CAM of topiq_nr: CFANet, target layer &#39;semantic_model.layer4&#39;" in report
    assert "Grad-CAM skipped" not in report


def test_fid_topk_with_torch_fidelity_inception_and_open_clip(mirror, tmp_path):
    """Inception from $TORCH_HOME/hub/checkpoints, CLIP ViT-L-14/openai from open_clip's HF snapshot."""
    mirror.ensure("torch", "clip")
    _images(tmp_path / "ref", 2)
    (tmp_path / "ref.csv").write_text("caption,image\na red car,ref/0.png\na blue bench,ref/1.png\n")
    out = tmp_path / "out"
    args = run_args("fid-topk", out, f"sdxl[{SMALL}]", metrics="topiq_nr", limit=None)  # both reference images
    iqabench(mirror, *args, "--option", "reference=ref.csv", "--option", "topk=50", "--option", "isc_splits=1",
             "--option", "kid_subsets=2", "--option", "kid_subset_size=2", "--option", "allow_small_topk=true",
             cwd=tmp_path)
    run_dir = finished_run(out, "fid-topk")
    result = json.loads((run_dir / "results" / "result.json").read_text())
    text = json.dumps(result)
    assert "weights-inception-2015-12-05-6726825d.pth" in text and "ViT-L-14/openai" in text
    assert "WEIGHTS-FREE" not in (run_dir / "report.html").read_text("utf-8")


def test_geneval_with_torchvision_mask_rcnn_and_clip_colours(mirror, tmp_path):
    """Mask R-CNN from torch hub's checkpoints (the mirror's detector sees a car everywhere), then CLIP
    ViT-L-14/openai classifies the car's colour: the official colour rule runs on real loaders."""
    from hub_mirror.torch_cache import DETECTED_CLASS

    mirror.ensure("torch", "clip")
    meta = {"tag": "colors", "include": [{"class": DETECTED_CLASS, "count": 1, "color": "red"}],
            "prompt": f"a photo of a red {DETECTED_CLASS}"}
    (tmp_path / "geneval.jsonl").write_text(json.dumps(meta) + "\n")
    out = tmp_path / "out"
    iqabench(mirror, *run_args("geneval", out, f"sdxl[{SMALL}]"), "--prompts", "geneval.jsonl",
             "--option", "images_per_prompt=1", "--option", "detector=maskrcnn", "--option", "max_objects=2",
             cwd=tmp_path)
    run_dir = finished_run(out, "geneval")
    per_image = pd.read_csv(run_dir / "results" / "geneval_per_image.csv")
    [reason] = per_image["reason"].fillna("").tolist()
    # Either the colour matched (correct) or the official failure line names the colours CLIP saw.
    assert bool(per_image["correct"].iloc[0]) or f"expected red {DETECTED_CLASS}>=1, found 0 red; and" in reason
    report = (run_dir / "report.html").read_text("utf-8")
    assert "NOT comparable" in report and "WEIGHTS-FREE" not in report


def test_geneval_official_detector_missing_is_one_sentence(mirror, monkeypatch):
    """GenEval's default detector (Mask2Former) needs mmdetection and its checkpoint; without them the loader
    stops with one sentence naming what is missing and the alternatives."""
    from iqabench.benchmarks.geneval.detectors import MASK2FORMER_CHECKPOINT, build_detector
    from iqabench.contracts.generators import WeightsMissingError

    mirror.apply(monkeypatch)
    try:
        import mmdet  # noqa: F401
        expected = MASK2FORMER_CHECKPOINT  # mmdet installed: the checkpoint is what the mirror lacks
    except ImportError:
        expected = "needs mmdetection, which is not installed"
    with pytest.raises(WeightsMissingError) as caught:
        build_detector()
    message = str(caught.value)
    assert expected in message and "detector=maskrcnn" in message
    assert "\n" not in message and message.count(". ") == 0
