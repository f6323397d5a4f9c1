"""Issue 16: every default that reproduces a paper setting, asserted against the paper's (or the official code's)
value. ACPO's are in test_acpo.py / test_acpo_stage1.py, GenEval's in test_geneval_rules.py, guidance's in
test_guidance.py."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from iqabench.adapters.iqa_adapter.generator import ADAPTER_OPTIONS, OFFICIAL_GENERATE_SCALE, PAPER_SCALE
from iqabench.adapters.iqa_adapter.phases import PHASES, resolve_mixed_precision
from iqabench.adapters.iqa_adapter.training import TrainConfig


def test_iqa_adapter_lambda_is_the_papers_0_5_and_1_0_stays_reachable():
    assert PAPER_SCALE == 0.5 and ADAPTER_OPTIONS["scale"] == 0.5  # every experiment of the paper; > 0.9 artifacts
    assert OFFICIAL_GENERATE_SCALE == 1.0  # X1716/IQA-Adapter IQAAdapter.generate(scale=1.0)
    from iqabench.contracts.specs import GeneratorSpec

    assert GeneratorSpec.parse("iqa-adapter:topiq[scale=1.0]").options_dict["scale"] in (1.0, "1.0")


def test_training_phases_are_the_papers():
    one, two = PHASES[1], PHASES[2]
    assert (one.resolution, one.learning_rate, one.batch_size, one.steps, one.needs_init) == (512, 1e-4, 8, 24_000,
                                                                                               False)
    assert (two.resolution, two.learning_rate, two.batch_size, two.steps, two.needs_init) == (1024, 1e-5, 16, 3_000,
                                                                                              True)
    assert (one.dataset, two.dataset) == ("CC3M", "LAION subset")
    from iqabench.adapters.iqa_adapter import cli, phases

    assert cli.PAPER_DEVICES == phases.PAPER_DEVICES == 40  # the torch-free CLI's copy of the estimate's default
    config = TrainConfig(output_dir="x")
    assert (config.learning_rate, config.batch_size) == (1e-4, 8)  # phase 1 / official train script
    assert (config.adam_beta1, config.adam_beta2, config.weight_decay) == (0.9, 0.999, 1e-2)
    assert (config.quality_drop, config.text_drop, config.both_drop) == (0.01, 0.05, 0.01)


def test_mixed_precision_is_bf16_where_supported_and_fp32_on_cpu():
    precision, why = resolve_mixed_precision("auto", "cpu")
    assert precision == "no" and "fp32" in why and "cpu" in why
    assert resolve_mixed_precision("fp16", "cpu") == ("fp16", "as asked")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert resolve_mixed_precision("auto", "cuda")[0] == "bf16"


@pytest.mark.parametrize("phase, expected", [
    (1, {"resolution": 512, "learning_rate": 1e-4, "batch_size": 8, "epochs": None, "max_steps": 24_000}),
    (2, {"resolution": 1024, "learning_rate": 1e-5, "batch_size": 16, "epochs": None, "max_steps": 3_000}),
])
def test_train_iqa_adapter_phase_presets_resolve(tmp_path, phase, expected):
    import typer

    from iqabench.adapters.iqa_adapter.cli import train_cmd

    app = typer.Typer()
    app.command()(train_cmd)
    args = ["--scores", str(tmp_path / "s.parquet"), "--metrics", "topiq_nr", "--out", str(tmp_path / "o"),
            "--phase", str(phase), "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output.strip().splitlines()[-1])
    assert {k: settings[k] for k in expected} == expected
    assert settings["mixed_precision"] in ("bf16", "no")
    override = CliRunner().invoke(app, [*args, "--learning-rate", "3e-5", "--resolution", "768"])
    assert json.loads(override.output.strip().splitlines()[-1])["resolution"] == 768
    if phase == 2:
        missing = CliRunner().invoke(app, [a for a in args if a != "--dry-run"])
        assert missing.exit_code != 0 and "--init-from" in missing.output


def test_sd14_preset_is_stable_diffusion_v1_4(tmp_path, monkeypatch):
    """ACPO's base: CompVis/stable-diffusion-v1-4, next to sd15/sd21 (checked against a fake HF cache holding
    only the files the weights check reads)."""
    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--CompVis--stable-diffusion-v1-4"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (snapshot / "unet" / "config.json").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    generator = build_generator("sd14", Runtime("cpu", "fp32", 1))
    assert generator.source == "CompVis/stable-diffusion-v1-4"
    assert {k: generator.options[k] for k in ("steps", "guidance_scale", "height", "width")} == {
        "steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512}


def test_guidance_generator_defaults_to_the_papers_formula():
    from iqabench.adapters.guidance.generator import GUIDANCE_OPTIONS
    from iqabench.contracts.generators import build_generator
    from iqabench.contracts.specs import SpecError
    from iqabench.execution.runtime import Runtime
    from iqabench.metrics import register_metric

    assert GUIDANCE_OPTIONS["alpha"] == 30.0 and GUIDANCE_OPTIONS["scaling"] == "paper"
    register_metric("test_paper_bright", lower_better=False, overwrite=True)(
        lambda device: torch.nn.Identity())
    rt = Runtime("cpu", "fp32", 1)
    paper = build_generator("guidance:test_paper_bright[base=tiny-sd]", rt)
    classic = build_generator("guidance:test_paper_bright[base=tiny-sd,scaling=classifier]", rt)
    assert paper.config.scaling == "paper" and classic.config.scaling == "classifier"
    assert paper.fingerprint() != classic.fingerprint()
    with pytest.raises(SpecError, match="scaling 'sigma' is unknown"):
        build_generator("guidance:test_paper_bright[base=tiny-sd,scaling=sigma]", rt)


def test_run_preset_dry_run_shows_the_resolved_setting_before_the_weights_are_needed(tmp_path, monkeypatch, capsys):
    """`run --preset paper:<id> --dry-run` without the adapters' weights: it still fails on them (one sentence,
    exit 2), but only after printing what the preset resolved to and where the command line departs from it."""
    from iqabench.cli import main

    monkeypatch.setenv("IQABENCH_ADAPTER_DIR", str(tmp_path / "no-weights"))
    with pytest.raises(SystemExit) as info:
        main(["run", "relgain", "--preset", "paper:iqa-fig3a", "--prompts", "smoke", "--limit", "2", "--dry-run",
              "--out", str(tmp_path / "store")])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "iqa_adapter_topiq_nr.safetensors" in err.replace(" ", "")  # preflight table
    resolved = err[err.index("paper:iqa-fig3a resolves to:"):err.index("error:")]
    assert ("generators=['iqa-adapter:topiq', 'iqa-adapter:hyperiqa', 'iqa-adapter:topiq+laion_aes']" in resolved
            and "metrics=['topiq_nr', 'hyperiqa', 'laion_aes']" in resolved and "seeds=[0]" in resolved
            and "prompts='smoke'" in resolved and "limit=2" in resolved), resolved
    assert "departs from paper:iqa-fig3a: limit=2 (the paper's: 8200)" in err


def test_iqa_adapter_scale_above_0_9_warns_in_one_sentence(tmp_path, monkeypatch):
    """The paper: lambda > 0.9 introduces artifacts. 0.9 itself and the default 0.5 stay silent."""
    import warnings

    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime

    (tmp_path / "iqa_adapter_topiq_nr.safetensors").write_bytes(b"adapter bytes")
    monkeypatch.setenv("IQABENCH_ADAPTER_DIR", str(tmp_path))
    runtime = Runtime("cpu", "fp32", 1)
    for quiet in ("iqa-adapter:topiq[base=tiny-sdxl]", "iqa-adapter:topiq[base=tiny-sdxl,scale=0.9]"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_generator(quiet, runtime)
    with pytest.warns(UserWarning) as caught:
        build_generator("iqa-adapter:topiq[base=tiny-sdxl,scale=1.0]", runtime)
    [warning] = [w for w in caught if "scale=" in str(w.message)]
    text = str(warning.message)
    assert "\n" not in text and "scale=1 is above 0.9" in text and "paper reports artifacts" in text, text
