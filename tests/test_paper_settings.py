"""Issue 16, done means: the documented commands for IQA-Adapter Fig. 3a, Table 5, Fig. 14, the guidance setting
and ACPO Table 2 resolve (no weights: a fake HF cache and fake adapter/LoRA files) to exactly the papers' settings.

The commands are read from docs/paper_settings.md, so the docs cannot drift from what the tests check.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqabench.contracts.generators import build_generator
from iqabench.execution.runtime import Runtime

DOCS = Path(__file__).resolve().parents[1] / "docs" / "paper_settings.md"
COMMIT = "0" * 40
HUB = {"stabilityai/stable-diffusion-xl-base-1.0": "StableDiffusionXLPipeline",
       "CompVis/stable-diffusion-v1-4": "StableDiffusionPipeline"}
SDXL = {"steps": 35, "guidance_scale": 7.5, "height": 1024, "width": 1024}
SD14 = {"steps": 50, "guidance_scale": 7.5, "height": 512, "width": 512}


def documented(name: str) -> list[list[str]]:
    """The command lines of the ```bash block after ``<!-- paper-command: name -->`` (continuations joined)."""
    text = DOCS.read_text()
    match = re.search(rf"<!-- paper-command: {re.escape(name)} -->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"no documented command {name!r} in {DOCS.name}"
    lines = match.group(1).replace("\\\n", " ").strip().splitlines()
    return [shlex.split(line) for line in lines]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A fake HF cache with the files the weights check reads, fake released adapters, a fake ACPO LoRA folder."""
    for repo, pipeline in HUB.items():
        base = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(COMMIT)
        snapshot = base / "snapshots" / COMMIT
        (snapshot / "unet").mkdir(parents=True)
        (snapshot / "model_index.json").write_text(json.dumps({"_class_name": pipeline,
                                                               "unet": ["diffusers", "UNet2DConditionModel"]}))
        (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
        (snapshot / "unet" / "config.json").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for stem in ("iqa_adapter_topiq_nr", "iqa_adapter_hyperiqa", "iqa_adapter_topiq_nr+laion_aes"):
        (adapters / f"{stem}.safetensors").write_bytes(b"adapter bytes")
    monkeypatch.setenv("IQABENCH_ADAPTER_DIR", str(adapters))
    work = tmp_path / "work"
    (work / "runs" / "acpo-sd14").mkdir(parents=True)
    (work / "runs" / "acpo-sd14" / "pytorch_lora_weights.safetensors").write_bytes(b"lora")
    (work / "runs" / "acpo-sd14" / "lora.json").write_text(json.dumps({"base": "sd14"}))
    monkeypatch.chdir(work)
    return work


def resolve_run(argv: list[str], monkeypatch) -> object:
    """Run ``iqabench run ...`` through the real CLI up to the RunSpec (the Runner is replaced: no generation)."""
    import iqabench.engine.runner
    from iqabench.cli.app import app

    captured = {}

    class Capture:
        is_main_process = True

        def __init__(self, spec, out, **kwargs):
            captured["spec"] = spec

        def summarize_plan(self):
            raise SystemExit(0)

    monkeypatch.setattr(iqabench.engine.runner, "Runner", Capture)
    assert argv[:2] == ["iqabench", "run"]
    result = CliRunner().invoke(app, argv[1:])
    assert "spec" in captured, result.output
    return captured["spec"]


def generation(spec: str) -> dict:
    generator = build_generator(spec, Runtime("cpu", "fp32", 1))
    return dict(generator.options)


def test_fig3a_command_is_the_papers_setting(offline, monkeypatch):
    (command,) = documented("iqa-fig3a")
    spec = resolve_run(command, monkeypatch)
    assert spec.benchmark == "relgain" and spec.prompts == "lexica_8200.txt" and spec.limit == 8200
    assert spec.generators == ["iqa-adapter:topiq", "iqa-adapter:hyperiqa", "iqa-adapter:topiq+laion_aes"]
    assert spec.seeds == [0] and spec.metrics == ["topiq_nr", "hyperiqa", "laion_aes"]
    for name in spec.generators:
        options = generation(name)
        assert {k: options[k] for k in SDXL} == SDXL  # SDXL 35 steps, CFG 7.5, 1024 px
        assert options["scale"] == 0.5 and options["target"] == "p99"  # lambda 0.5
        baseline = build_generator(name, Runtime("cpu", "fp32", 1)).baseline()
        assert baseline == "sdxl[guidance_scale=7.5,height=1024,steps=35,width=1024]"


def test_table5_command_is_the_papers_setting(offline, monkeypatch):
    (command,) = documented("iqa-table5")
    spec = resolve_run(command, monkeypatch)
    assert spec.benchmark == "fid-topk" and spec.limit == 10000 and spec.seeds == [0]
    assert spec.generators == ["sdxl", "iqa-adapter:topiq"]
    assert spec.options == {"topk": "25,10", "reference": "coco_10k.csv", "reference_stats": "coco_train.npz",
                            "topk_reference": "coco/train2017/"}
    from iqabench.support.paper_presets import TABLE5_METRICS

    assert spec.metrics == list(TABLE5_METRICS) and len(spec.metrics) == 18  # "all IQA/IAA metrics"
    assert {k: generation("sdxl")[k] for k in SDXL} == SDXL
    assert generation("iqa-adapter:topiq")["scale"] == 0.5
    (stats_command,) = documented("iqa-table5-stats")
    assert stats_command[:3] == ["iqabench", "fid-stats", "build"] and "coco_train.npz" in stats_command


def test_table5_preset_names_the_files_it_needs(offline, monkeypatch):
    from iqabench.support import paper_presets

    with pytest.raises(ValueError, match=r"--option reference_stats=<coco_train.npz.*--option topk_reference="):
        paper_presets.apply("paper:iqa-table5", "fid-topk", {"options": {"reference": "coco_10k.csv"}})


def test_fig14_command_is_the_papers_setting(offline, monkeypatch):
    (command,) = documented("iqa-fig14")
    spec = resolve_run(command, monkeypatch)
    assert spec.benchmark == "seed-consistency" and spec.limit == 25 and spec.seeds == list(range(100))
    assert spec.generators == ["iqa-adapter:topiq", "iqa-adapter:hyperiqa", "iqa-adapter:topiq+laion_aes"]
    assert spec.metrics == ["topiq_nr", "hyperiqa", "laion_aes"]
    for name in spec.generators:  # every released adapter, at the paper's lambda and target
        options = generation(name)
        assert {k: options[k] for k in SDXL} == SDXL and options["scale"] == 0.5 and options["target"] == "p99"


def test_guidance_command_is_the_papers_formula(offline, monkeypatch):
    (command,) = documented("iqa-guidance")
    spec = resolve_run(command, monkeypatch)
    assert spec.generators == ["guidance:topiq_nr"] and spec.limit == 8200
    assert spec.metrics == ["topiq_nr", "laion_aes"]
    generator = build_generator(spec.generators[0], Runtime("cpu", "fp32", 1))
    config = generator.config
    assert (config.alpha, config.scaling, config.decode) == (30.0, "paper", "z")  # no sigma_t, decode z_t
    assert {k: generator.options[k] for k in SDXL} == SDXL


def test_acpo_table2_commands_are_the_papers_setting(offline, monkeypatch):
    from iqabench.cli.app import app

    ipce, train = documented("acpo-table2-train")
    assert ipce[:3] == ["iqabench", "train", "ipce"]
    assert ipce[ipce.index("--schedule") + 1] == "paper" and ipce.count("--table") == 3  # three-stage pre-training
    # --dry-run checks that the evaluator checkpoint the first command writes exists; stand in for that step.
    evaluator = Path(next(a for a in train if a.startswith("ipce:")).split(":", 1)[1])
    evaluator.parent.mkdir(parents=True, exist_ok=True)
    evaluator.write_bytes(b"")
    dry = CliRunner().invoke(app, [*train[1:], "--dry-run"])
    assert dry.exit_code == 0, dry.output
    settings = json.loads(dry.output.strip().splitlines()[-1])
    assert settings["base"] == "sd14"
    assert (settings["x0_mode"], settings["rollout_steps"], settings["mse_window"]) == ("rollout", 10, "all")
    assert settings["lora_targets"] == ["all-linear"]
    assert (settings["learning_rate"], settings["max_steps"], settings["t_max"], settings["lambda_q"]) == (
        2e-5, 1000, 100, 0.1)
    assert settings["evaluator_kind"] == "ipce"
    evaluator.write_bytes(b"")
    prompts = {"acpo-table2": "drawbench.txt", "acpo-table2-parti": "parti",
               "acpo-table2-diffusiondb": "diffusiondb_sample.txt"}
    for preset, prompt_set in prompts.items():
        (command,) = documented(preset)
        spec = resolve_run(command, monkeypatch)
        assert spec.benchmark == "relgain" and spec.generators == ["acpo:runs/acpo-sd14"]
        assert spec.metrics == ["pickscore", "clipscore", "ipce:runs/ipce/ipce.safetensors"]  # Table 2's metrics
        assert spec.prompts == prompt_set
    generator = build_generator(spec.generators[0], Runtime("cpu", "fp32", 1))
    assert generator.base_spec.family == "sd14"
    assert {k: generator.options[k] for k in SD14} == SD14
    assert generator.baseline().startswith("sd14[")


def test_iqa_adapter_training_commands_are_the_papers_phases(offline):
    from iqabench.cli.app import app

    one, two = documented("iqa-train")
    expected = {1: (512, 1e-4, 8, 24_000), 2: (1024, 1e-5, 16, 3_000)}
    for number, argv in ((1, one), (2, two)):
        dry = CliRunner().invoke(app, [*argv[1:], "--dry-run"])
        assert dry.exit_code == 0, dry.output
        settings = json.loads(dry.output.strip().splitlines()[-1])
        assert (settings["resolution"], settings["learning_rate"], settings["batch_size"],
                settings["max_steps"]) == expected[number]
    assert settings["epochs"] is None and settings["init_from"].endswith("checkpoint-24000/adapter.safetensors")


def test_iqa_adapter_paper_preset_is_both_phases_with_the_estimate_first(offline):
    from iqabench.cli.app import app

    (argv,) = documented("iqa-train-paper")
    dry = CliRunner().invoke(app, [*argv[1:], "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.strip().splitlines()
    assert lines[0].startswith("estimated cost: 198 A100-hours")  # printed first
    plan = json.loads(lines[-1])
    one, two = plan["phases"]
    assert (one["max_steps"], one["dataset"], one["resolution"], one["learning_rate"]) == (24_000, "CC3M", 512, 1e-4)
    assert (two["max_steps"], two["dataset"], two["resolution"], two["learning_rate"]) == (
        3_000, "LAION subset", 1024, 1e-5)
    assert one["scores"] == "cc3m/scores.parquet" and two["scores"] == "laion_hq/scores.parquet"
    assert two["init_from"].endswith("phase1/checkpoint-24000/adapter.safetensors")
    for phase in (one, two):
        assert (phase["optimizer"], phase["betas"], phase["weight_decay"]) == ("AdamW", [0.9, 0.999], 1e-2)
    no_phase2 = CliRunner().invoke(app, [*argv[1:argv.index("--phase2-scores")], *argv[argv.index("--metrics"):]])
    assert no_phase2.exit_code != 0 and "--phase2-scores" in no_phase2.output


def test_iqa_adapter_paper_preset_applies_and_prints_command_line_departures(offline):
    """A shortened rehearsal of the paper's two phases: every given value reaches both phases and is named."""
    from iqabench.cli.app import app

    (argv,) = documented("iqa-train-paper")
    dry = CliRunner().invoke(app, [*argv[1:], "--max-steps", "10", "--resolution", "64", "--learning-rate", "0.001",
                                   "--dry-run"])
    assert dry.exit_code == 0, dry.output
    one, two = json.loads(dry.output.strip().splitlines()[-1])["phases"]
    for phase in (one, two):
        assert (phase["max_steps"], phase["resolution"], phase["learning_rate"]) == (10, 64, 1e-3)
    assert two["init_from"].endswith("phase1/checkpoint-10/adapter.safetensors")
    assert "departures from the paper's phases (applied to both): --resolution 64, --learning-rate 0.001, " \
           "--max-steps 10" in dry.output


def test_acpo_interpretations_are_named_settings(offline):
    from iqabench.adapters.acpo.config import LAMBDA_Q_SETTINGS, resolve_lambda_q
    from iqabench.adapters.acpo.rollout import rollout_timesteps
    from iqabench.cli.app import app

    assert LAMBDA_Q_SETTINGS == {"appendix": 0.1, "main-text": 1.0}
    assert resolve_lambda_q("main-text") == 1.0 and resolve_lambda_q("0.3") == 0.3
    with pytest.raises(ValueError, match="appendix"):
        resolve_lambda_q("optimal")
    assert rollout_timesteps(95, 10) == [95, 86, 76, 66, 57, 48, 38, 28, 19, 10]  # even: all inside T_max
    assert rollout_timesteps(95, 10, 50) == [95, 80, 60, 40, 20, 0]  # the 50-step grid has 5 steps below 95
    (_, train) = documented("acpo-table2-train")
    evaluator = Path(next(a for a in train if a.startswith("ipce:")).split(":", 1)[1])
    evaluator.parent.mkdir(parents=True, exist_ok=True)
    evaluator.write_bytes(b"")
    dry = CliRunner().invoke(app, [*train[1:], "--lambda-q", "main-text", "--rollout-grid", "sampler-50",
                                   "--dry-run"])
    assert dry.exit_code == 0, dry.output
    settings = json.loads(dry.output.strip().splitlines()[-1])
    assert (settings["lambda_q"], settings["rollout_grid"]) == (1.0, "sampler-50")


def test_presets_refuse_a_wrong_benchmark_and_missing_prompts(offline, monkeypatch):
    from iqabench.support import paper_presets

    with pytest.raises(ValueError, match="reproduces a relgain run"):
        paper_presets.apply("paper:iqa-fig3a", "fid-topk", {})
    with pytest.raises(ValueError, match="Lexica"):
        paper_presets.apply("paper:iqa-fig3a", "relgain", {})
    with pytest.raises(ValueError, match="unknown preset"):
        paper_presets.get("paper:fig99")
    fields, departures = paper_presets.apply("paper:iqa-fig14", "seed-consistency",
                                             {"prompts": "p.txt", "seeds": [0, 1]})
    assert fields["seeds"] == [0, 1] and departures and "seeds" in departures[0]


def test_every_preset_is_documented_with_its_cost():
    from iqabench.support.paper_presets import SETTINGS

    text = DOCS.read_text()
    for name in SETTINGS:
        assert f"<!-- paper-command: {name} -->" in text, name
    assert "A100-hours" in text


def test_plain_preset_paper_picks_the_benchmarks_only_setting():
    from iqabench.support import paper_presets

    fields, _ = paper_presets.apply("paper", "seed-consistency", {"prompts": "p.txt"})
    assert fields["seeds"] == list(range(100)) and fields["limit"] == 25
    with pytest.raises(ValueError, match="paper:iqa-fig3a, paper:iqa-guidance, paper:acpo-table2, "
                                         "paper:acpo-table2-parti, paper:acpo-table2-diffusiondb"):
        paper_presets.apply("paper", "relgain", {"prompts": "p.txt"})
