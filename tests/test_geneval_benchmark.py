"""GenEval's colour step, model loading errors, and an offline smoke run of the benchmark on tiny-sd."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from iqabench.api import run
from iqabench.benchmarks.geneval.benchmark import GenEval, accuracy_footnote, accuracy_table, reason_kind
from iqabench.benchmarks.geneval.clip import WeightsUnavailableError, build_clip
from iqabench.benchmarks.geneval.colors import ColorClassifier, object_crop
from iqabench.benchmarks.geneval.detectors import build_detector
from iqabench.benchmarks.geneval.layout import read_official_folder, read_results_jsonl
from iqabench.benchmarks.geneval.rules import COLORS, Detection, summarize
from iqabench.contracts.specs import RunSpec


@pytest.fixture(scope="module")
def random_clip():
    return build_clip(weights="random")


def test_crop_pastes_the_mask_over_grey_and_crops_to_the_box():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:6, 4:8] = True
    crop = object_crop(image, Detection((2, 1, 10, 8), 0.9, mask))
    assert crop.size == (8, 7)
    assert crop.getpixel((0, 0)) == (153, 153, 153)  # outside the mask: #999
    assert crop.getpixel((3, 2)) == (255, 0, 0)  # image pixel (5, 3) lies inside the mask
    assert object_crop(image, Detection((0, 0, 5, 5), 0.9)).getpixel((0, 0)) == (255, 0, 0)  # no mask: box only
    with pytest.raises(ValueError, match="does not match the image size"):
        object_crop(image, Detection((0, 0, 5, 5), 0.9, np.zeros((3, 3), dtype=bool)))


def test_color_step_with_random_clip_returns_one_of_ten_colours(random_clip):
    classifier = ColorClassifier(random_clip)
    weights = classifier.class_weights("car")
    assert weights.shape == (64, 10)
    assert torch.allclose(weights.norm(dim=0), torch.ones(10), atol=1e-5)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    colors = classifier.for_image(image)([Detection((0, 0, 30, 30), 0.9), Detection((10, 5, 60, 40), 0.8)], "car")
    assert len(colors) == 2 and set(colors) <= set(COLORS)
    assert classifier.for_image(image)._weights is classifier._weights  # text weights built once per class


def test_missing_weights_fail_with_one_clear_sentence(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailableError, match=r"nope\.safetensors does not exist.*weights=random"):
        build_clip(weights=str(tmp_path / "nope.safetensors"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match=r"maskrcnn_resnet50_fpn_v2_coco-73cbd019\.pth not found at "):
        build_detector("maskrcnn")
    with pytest.raises(WeightsUnavailableError, match="mmdetection, which is not installed"):
        build_detector()  # the official detector by default
    with pytest.raises(ValueError, match="unknown GenEval detector 'yolo'"):
        build_detector("yolo")


def test_reason_kinds():
    assert reason_kind("expected clock>=2, found 1") == "missing object"
    assert reason_kind("expected red car>=1, found 0 red; and 1 blue") == "wrong color"
    assert reason_kind("expected dog right of target, found left of target") == "wrong position"
    assert reason_kind("no target for dog to be right of") == "position target missing"
    assert reason_kind("expected clock<3, found 3") == "too many objects"


def test_accuracy_table_has_cis_clustered_by_prompt_and_declares_the_headline():
    rows = [{"generator": g, "prompt_index": p, "tag": tag, "correct": ok}
            for g, oks in (("a", [1, 1, 0, 0, 1, 0, 1, 1]), ("b", [1, 0, 0, 0, 0, 0, 1, 0]))
            for (p, tag), ok in zip([(0, "counting"), (0, "counting"), (1, "counting"), (1, "counting"),
                                     (2, "colors"), (2, "colors"), (3, "colors"), (3, "colors")], oks, strict=True)]
    table = accuracy_table(rows, ["a", "b"], ["counting", "colors", "overall"]).set_index("generator")
    assert table.loc["a", "counting"] == 0.5 and table.loc["a", "colors"] == 0.75
    assert table.loc["a", "overall"] == pytest.approx(0.625)
    assert table.loc["a", "counting_ci_low"] == 0.0 and table.loc["a", "counting_ci_high"] == 1.0  # 2 prompts: 0 or 1
    assert table.loc["b", "n_prompts"] == 4
    assert (table.n_units == 2).all()  # each task rests on 2 of the 4 prompts: the row's CIs on its smallest task
    note = accuracy_footnote(table)
    assert "prompts" in note and "no bold" in note  # accuracies are levels: no test, no bold


def test_offline_smoke_run_on_tiny_sd(tmp_path, monkeypatch):
    export = tmp_path / "official"
    spec = RunSpec("geneval", ["tiny-sd"], prompts="geneval", seeds=[0], batch_size=4,
                   options={"weights": "random", "per_task": 1, "images_per_prompt": 2, "export": str(export)})
    outcome = run(spec, out=tmp_path / "store")
    result = outcome.result
    assert outcome.plan.n_unique_images == 12  # one prompt per task x 2 images
    table = result.tables["geneval_numeric"]
    assert list(table.columns[:7]) == ["single_object", "two_object", "counting", "colors", "position", "color_attr",
                                       "overall"]
    assert table.loc["tiny-sd", "n_images"] == 12
    assert any(n.startswith("WEIGHTS-FREE SMOKE RUN") for n in result.notes)
    assert result.summary["smoke_run"] is True and result.summary["comparable_with_published"] is False
    report = outcome.report.read_text("utf-8")
    assert "WEIGHTS-FREE SMOKE RUN" in report and "geneval" in report
    # The exported official files summarise to the same numbers as the report.
    folder = export / "tiny-sd"
    rows = read_results_jsonl(folder / "results.jsonl")
    assert len(rows) == 12 and summarize(rows).overall == pytest.approx(table.loc["tiny-sd", "overall"])
    assert len(read_official_folder(folder)) == 12
    assert json.loads(rows[0]["metadata"])["tag"] == "single_object"
    # A second analysis reads every verdict from the Store: no model is built.
    monkeypatch.setattr(GenEval, "_models", lambda *a: (_ for _ in ()).throw(AssertionError("models rebuilt")))
    again = run(spec, out=tmp_path / "store")
    assert again.result.tables["geneval_numeric"].equals(table)


def test_bad_weights_option_is_refused(tmp_path):
    spec = RunSpec("geneval", ["tiny-sd"], options={"weights": "maybe"})
    with pytest.raises(ValueError, match="weights=pretrained or weights=random"):
        run(spec, out=tmp_path)


def test_mask2former_checkpoint_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    # mmdet is not installable offline: a stand-in module whose init_detector builds a small network.
    import sys
    import types

    from safetensors.torch import save_file

    mmdet = types.ModuleType("mmdet")
    mmdet.__file__, mmdet.__version__ = str(tmp_path / "mmdet" / "__init__.py"), "0.0-fake"
    apis = types.ModuleType("mmdet.apis")
    apis.init_detector = lambda config, checkpoint, device="cpu": torch.nn.Sequential(torch.nn.Linear(2, 2),
                                                                                      torch.nn.Linear(2, 2))
    mmdet.apis = apis
    monkeypatch.setitem(sys.modules, "mmdet", mmdet)
    monkeypatch.setitem(sys.modules, "mmdet.apis", apis)
    good = apis.init_detector(None, None).state_dict()
    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "good.safetensors"))
    save_file({f"module.{k}": v.contiguous() for k, v in good.items()}, str(tmp_path / "prefixed.safetensors"))
    detector = build_detector("mask2former", str(tmp_path / "good.safetensors"))
    assert detector.comparable and detector.missing_keys == []
    assert torch.equal(detector.model.state_dict()["0.weight"], good["0.weight"])
    with pytest.raises(ValueError, match=r"prefixed\.safetensors does not fit the Mask2Former config.*4 of the "):
        build_detector("mask2former", str(tmp_path / "prefixed.safetensors"))
