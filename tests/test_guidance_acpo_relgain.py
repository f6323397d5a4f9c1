"""Gradient guidance and ACPO side by side in one RelGain run, trained and launched through the CLI."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from iqabench.api import execute
from iqabench.cli import app
from iqabench.contracts.registry import load_plugin
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner

PLUGIN = '''
import torch
from iqabench.metrics import register_metric

@register_metric("relgain_test_sharpness", lower_better=False, differentiable=True, overwrite=True)
def build(device):
    """Mean absolute vertical gradient: a differentiable toy NR metric."""
    class Sharpness(torch.nn.Module):
        def forward(self, x):
            return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + 1e-3
    return Sharpness()
'''


def test_guidance_and_acpo_rows_appear_next_to_each_other(tmp_path):
    plugin = tmp_path / "sharpness_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    load_plugin(str(plugin))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    lora = tmp_path / "lora"
    trained = CliRunner().invoke(app, ["train", "acpo", "--data", str(images), "--out", str(lora), "--base",
                                       "tiny-sd", "--evaluator", "relgain_test_sharpness", "--max-steps", "1",
                                       "--resolution", "64", "--save-every", "1"])
    assert trained.exit_code == 0, trained.output
    generators = ["guidance:relgain_test_sharpness[alpha=30,base=tiny-sd]", f"acpo:{lora}"]
    spec = RunSpec("relgain", generators, metrics=["piqe", "entropy", "relgain_test_sharpness"], limit=2,
                   seeds=[0], batch_size=2, plugins=[str(plugin)])
    outcome = execute(Runner(spec, tmp_path / "store"))
    table = outcome.result.tables["relgain"]
    assert sorted(set(table["generator"])) == sorted(generators)
    assert all(b.startswith("tiny-sd[") for b in table["baseline"])
    guided = table[(table.generator == generators[0]) & (table.metric == "relgain_test_sharpness")]
    assert guided["relgain"].iloc[0] > 0  # guidance raises the metric it follows
    paired = outcome.result.tables["paired_statistics"]
    assert {"t_statistic", "p_value", "win_rate", "improvement_std"} <= set(paired.columns)
    assert len(paired) == 2 * 3
    html = outcome.report.read_text("utf-8")
    assert "guidance:relgain_test_sharpness" in html and "acpo:" in html
