"""adversarial-gradcam: inflation index on hand-made gains, Grad-CAM on a model with known attention,
CAM shift, layer resolution, and an offline run with guidance on a user-registered small CNN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from iqabench.api import run
from iqabench.benchmarks.adversarial_gradcam import (
    CamLayer,
    cam_shift,
    compute_cams,
    inflation_index,
    resolve_cam_layer,
    vit_reshape_transform,
)
from iqabench.contracts.specs import RunSpec
from iqabench.metrics import register_metric


class BrightnessIQA(nn.Module):
    """Scores mean positive conv response (brightness): Grad-CAM must light up where the image is bright."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(0.05)
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(1, 2, 3))


@register_metric("test_brightness_iqa", lower_better=False, differentiable=True, overwrite=True,
                 description="test CNN, fixed hand-set weights (no download)")
def _quadrant(device):
    return BrightnessIQA()


def test_inflation_index_on_hand_made_gains():
    transfer = pd.DataFrame({"a": [30.0, 2.0], "b": [1.0, 10.0], "c": [-1.0, 4.0]}, index=["a", "b"])
    index = inflation_index(transfer)
    assert index["a"] == pytest.approx(30.0 - 0.0)  # mean of others (1, -1) = 0
    assert index["b"] == pytest.approx(10.0 - 3.0)
    with pytest.raises(ValueError, match="not in the panel"):
        inflation_index(pd.DataFrame({"a": [1.0]}, index=["z"]))


def test_gradcam_highlights_what_the_model_scores():
    images = torch.zeros(2, 3, 32, 32)
    images[0, :, 2:12, 2:12] = 1.0  # a bright patch top-left in image 0, bottom-right in image 1
    images[1, :, 20:30, 20:30] = 1.0
    network = BrightnessIQA()
    layer, cam_layer, how = resolve_cam_layer(network)
    assert layer == "conv" and "fallback" in how
    cams = compute_cams(network, images, cam_layer, lower_better=False)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert cams[0, 3:11, 3:11].mean() > 0.8 and cams[0, 18:, 18:].max() < 0.05
    assert cams[1, 21:29, 21:29].mean() > 0.8 and cams[1, :14, :14].max() < 0.05
    assert cam_shift(cams[0], cams[0]) == pytest.approx(0.0, abs=1e-6)
    assert cam_shift(cams[0], cams[1]) > 1.0  # attention moved to the other corner
    # regression target sign: for a lower-is-better metric brightness lowers quality, so nothing is highlighted
    assert compute_cams(network, images, cam_layer, lower_better=True).max() < 1e-6


def test_known_layer_for_pyiqa_cnniqa_with_random_weights_and_vit_reshape():
    from pyiqa.archs.cnniqa_arch import CNNIQA

    torch.manual_seed(0)
    network = CNNIQA(pretrained=None).eval()  # pyiqa's architecture, random weights: no download
    layer, cam_layer, how = resolve_cam_layer(network)
    assert layer == "conv1" and how == "known layer for CNNIQA"
    cams = compute_cams(network, torch.rand(1, 3, 40, 40), cam_layer, lower_better=False)
    assert cams.shape == (1, 40, 40) and np.isfinite(cams).all()
    assert resolve_cam_layer(network, "fc1")[0] == "fc1"
    tokens = torch.arange(2 * 17 * 5, dtype=torch.float32).reshape(2, 17, 5)
    grid = vit_reshape_transform(tokens)
    assert grid.shape == (2, 5, 4, 4) and grid[0, :, 0, 1].tolist() == tokens[0, 2].tolist()
    assert isinstance(CamLayer("x").reshape, type(None))


def test_offline_run_guidance_on_a_registered_cnn(tmp_path):
    spec = RunSpec("adversarial-gradcam", [], metrics=["entropy"], limit=2, seeds=[0], batch_size=2,
                   options={"guided_metrics": "test_brightness_iqa", "base": "tiny-sd[steps=2]", "alpha": 50.0,
                            "cam_items": 1})
    outcome = run(spec, out=tmp_path)
    result = outcome.result
    matrix = result.tables["transfer_matrix"].set_index("method")
    assert list(matrix.index) == ["guidance on test_brightness_iqa"]
    assert list(matrix.columns) == ["entropy", "entropy_ci_low", "entropy_ci_high", "entropy_p",
                                    "test_brightness_iqa", "test_brightness_iqa_ci_low", "test_brightness_iqa_ci_high",
                                    "test_brightness_iqa_p", "n_units", "entropy_p_holm", "test_brightness_iqa_p_holm"]
    assert result.headline.source == "transfer_matrix" and result.headline.signed is True
    assert result.table("transfer_matrix").effects == {"entropy": "entropy_p_holm",
                                                       "test_brightness_iqa": "test_brightness_iqa_p_holm"}
    row = matrix.loc["guidance on test_brightness_iqa"]
    inflation = result.tables["inflation_index"].set_index("target").inflation_index
    assert inflation["test_brightness_iqa"] == pytest.approx(row["test_brightness_iqa"] - row["entropy"])
    assert row["test_brightness_iqa"] != pytest.approx(0.0)  # guidance changed the images
    assert "gradcam_test_brightness_iqa" in result.figures
    shifts = result.tables["cam_shift"]
    assert len(shifts) == 1 and np.isfinite(shifts.cam_shift).all()
    assert any("fixed hand-set weights" in n and "'conv'" in n for n in result.notes)


def test_guidance_that_leaves_the_base_pixels_is_blank_not_a_measured_zero(tmp_path):
    """Issue 25: alpha = 0 hands eps on untouched, so the guided images are the base's pixels under another key."""
    spec = RunSpec("adversarial-gradcam", [], metrics=["entropy"], limit=1, seeds=[0, 1], batch_size=2,
                   options={"guided_metrics": "test_brightness_iqa", "base": "tiny-sd[steps=2]", "alpha": 0.0,
                            "cam_items": 1})
    result = run(spec, out=tmp_path).result
    row = result.tables["transfer_matrix"].set_index("method").loc["guidance on test_brightness_iqa"]
    assert row[["entropy", "entropy_ci_low", "test_brightness_iqa", "test_brightness_iqa_p"]].isna().all()
    noted = [n for n in result.notes if n.startswith("guidance:test_brightness_iqa[alpha=0.0,base=tiny-sd,steps=2] "
                                                     "and its baseline tiny-sd[steps=2] made pixel-identical images "
                                                     "for all 2 paired item(s)")]
    assert len(noted) == 1 and "not a measured 0" in noted[0]
    assert noted[0].endswith("raise alpha or guide on a metric whose gradient reaches the image")
    assert np.isnan(result.tables["inflation_index"].set_index("target").inflation_index["test_brightness_iqa"])
