"""ACPO stage 1: IPCE head training on an image/MOS table (learning check on synthetic data), safetensors
checkpoints of both trainable evaluators, and `train acpo --evaluator` choosing any of the three kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iqabench.adapters.acpo import IPCEEvaluator, TwoStreamIQA, build_evaluator, load_ipce, load_two_stream
from iqabench.adapters.acpo.evaluator_spec import parse_evaluator, save_two_stream
from iqabench.adapters.acpo.evaluators import MetricEvaluator, tiny_open_clip
from iqabench.adapters.acpo.ipce import (
    DEFAULT_LAYERS,
    IPCE_CLIP,
    IPCE_MOS_RANGE,
    IPCE_PRETRAINED,
    save_ipce,
)
from iqabench.execution.runtime import Runtime

RT = Runtime(device="cpu", dtype="fp32", batch_size=2)
TINY_CLIP = "iqabench-test-tiny-clip"


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory):
    """A tiny open_clip architecture registered under its own name, its random weights as a .safetensors file:
    the real open_clip loading path (create_model(name, pretrained=<file>)) with no download."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip")
    config = {"embed_dim": 32,
              "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    model, _ = tiny_open_clip(0)
    file = folder / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))
    return file


TEACHER = {"global_weight": 1.5, "layer_weights": (-2.0, 1.0), "bias": 0.3}


def synthetic_table(folder, n: int = 60, seed: int = 0, teacher: bool = True):
    """Random blurred patterns and a MOS table for them (path, prompt, score on 1..5).

    A random tiny CLIP knows nothing about quality, so the learning check uses a *teacher*: the MOS of each
    image is what an IPCE head with known weights (``TEACHER``) says about the tiny CLIP's features of the PNG
    as saved. Stage 1 sees only the CSV and must recover that quality function (held-out ranking).
    """
    from iqabench.adapters.acpo.mos_table import MosTable

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, prompts = [], []
    for i in range(n):
        sharpness = float(rng.random())
        base = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed * 1000 + i))
        blurred = torch.nn.functional.avg_pool2d(base, 7, stride=1, padding=3)
        image = sharpness * base + (1 - sharpness) * blurred
        array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
        prompts.append(f"a pattern number {i % 5}")
    if teacher:
        model, tokenizer = tiny_open_clip(0)
        judge = IPCEEvaluator(model, tokenizer, layers=(0, 1), **TEACHER)
        with torch.no_grad():
            features = judge.features(MosTable(paths, prompts, torch.zeros(n)).images(range(n), 32), prompts)
            judge.feature_mean.copy_(features.mean(dim=0))
            judge.feature_std.copy_(features.std(dim=0))
            scores = (1 + 4 * torch.sigmoid(judge.logit(features))).tolist()
    else:
        scores = [1 + 4 * float(v) for v in rng.random(n)]
    rows = ["path,prompt,score"] + [f"{p.name},{t},{s:.6f}" for p, t, s in zip(paths, prompts, scores, strict=True)]
    (folder / "mos.csv").write_text("\n".join(rows) + "\n")
    return folder / "mos.csv"


def test_ipce_defaults_are_the_official_ones():
    assert IPCE_CLIP == "ViT-B-32" and IPCE_PRETRAINED == "openai"  # pf0607/IPCE: clip.load("ViT-B/32")
    assert IPCE_MOS_RANGE == (1.0, 5.0)  # five quality levels weighted 1..5
    assert len(DEFAULT_LAYERS) == 4 and max(DEFAULT_LAYERS) == 11  # ours (documented): four of 12 blocks


def test_ipce_stage1_learns_quality_from_a_mos_table(tmp_path, tiny_clip_file):
    """Learning check: from the CSV alone, the fitted head ranks 12 held-out images by their MOS (Spearman >= 0.9)
    and in scale (Pearson >= 0.9)."""
    import typer

    from iqabench.adapters.acpo.cli import train_ipce_cmd

    table = synthetic_table(tmp_path / "data")
    app = typer.Typer()
    app.command()(train_ipce_cmd)
    result = CliRunner().invoke(app, ["--table", str(table), "--out", str(tmp_path / "ipce"), "--clip", TINY_CLIP,
                                      "--weights", str(tiny_clip_file), "--layers", "0,1", "--device", "cpu",
                                      "--epochs", "400"])
    assert result.exit_code == 0, result.output
    fit = json.loads((tmp_path / "ipce" / "ipce_fit.json").read_text())
    assert fit["train_loss_last"] < 0.5 * fit["train_loss_first"], fit
    assert fit["n_val"] == 12 and fit["srcc"] >= 0.9, fit
    evaluator = load_ipce(tmp_path / "ipce" / "ipce.safetensors")
    assert fit["plcc"] >= 0.9, fit
    assert evaluator.mos_range == (1.0, 5.0) and evaluator.layers == [0, 1]
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    q = evaluator(images, ["a", "b"])
    assert torch.all((q > 0) & (q < 1))
    mos = evaluator.mos(images, ["a", "b"])
    assert torch.all((mos > 1) & (mos < 5))
    (grad,) = torch.autograd.grad(q.sum(), images)
    assert grad.abs().sum() > 0  # differentiable: what ACPO stage 2 needs


def test_ipce_checkpoint_round_trips_and_is_safetensors(tmp_path, tiny_clip_file):
    model, tokenizer = tiny_open_clip(0)
    evaluator = IPCEEvaluator(model, tokenizer, layers=(0, 1), layer_weights=(0.5, -2.0), global_weight=3.0,
                              bias=0.25)
    evaluator.feature_mean.fill_(0.1)
    path = save_ipce(evaluator, tmp_path / "ipce.safetensors", TINY_CLIP, str(tiny_clip_file))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:  # a safetensors file, not a pickle
        assert set(handle.keys()) == {"head.weight", "head.bias", "feature_mean", "feature_std"}
    loaded = load_ipce(path)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images, ["x", "y"]), evaluator(images, ["x", "y"]))
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an IPCE checkpoint"):
        load_ipce(tmp_path / "other.safetensors")


def test_two_stream_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TwoStreamIQA(width=4, hidden=8, size=32).eval()
    path = save_two_stream(model, tmp_path / "ts.safetensors")
    images = torch.rand(2, 3, 40, 40)
    torch.testing.assert_close(load_two_stream(path)(images), model(images))
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "ipce.safetensors"), metadata={"iqabench.ipce": "{}"})
    with pytest.raises(ValueError, match=r"ipce.safetensors is not a two-stream checkpoint \(no 'iqabench.two_stream' "
                                         r"metadata\)$"):
        load_two_stream(tmp_path / "ipce.safetensors")


def test_evaluator_strings_pick_each_kind(tmp_path, tiny_clip_file):
    from iqabench.metrics import register_metric

    class Bright(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    register_metric("test_stage1_bright", lower_better=False, overwrite=True)(lambda device: Bright())
    assert parse_evaluator("topiq_nr") == ("metric", "topiq_nr")
    assert parse_evaluator("metric:topiq_nr") == ("metric", "topiq_nr")
    assert parse_evaluator("ipce:runs/x.safetensors") == ("ipce", "runs/x.safetensors")
    assert parse_evaluator("two-stream:a.safetensors") == ("two-stream", "a.safetensors")
    with pytest.raises(ValueError, match="names no checkpoint"):
        parse_evaluator("ipce:")
    assert isinstance(build_evaluator("test_stage1_bright", RT), MetricEvaluator)
    model, tokenizer = tiny_open_clip(0)
    ipce_file = save_ipce(IPCEEvaluator(model, tokenizer, layers=(0,)), tmp_path / "i.safetensors", TINY_CLIP,
                          str(tiny_clip_file))
    assert isinstance(build_evaluator(f"ipce:{ipce_file}", RT), IPCEEvaluator)
    ts_file = save_two_stream(TwoStreamIQA(width=4, hidden=8, size=32), tmp_path / "t.safetensors")
    assert isinstance(build_evaluator(f"two-stream:{ts_file}", RT), TwoStreamIQA)
    with pytest.raises(FileNotFoundError, match="train two-stream"):
        build_evaluator(f"two-stream:{tmp_path / 'missing.safetensors'}", RT)


def test_train_acpo_accepts_an_ipce_and_a_two_stream_evaluator(tmp_path, tiny_clip_file):
    import typer

    from iqabench.adapters.acpo.cli import train_two_stream_cmd

    table = synthetic_table(tmp_path / "data", n=8, teacher=False)
    app = typer.Typer()
    app.command()(train_two_stream_cmd)
    done = CliRunner().invoke(app, ["--table", str(table), "--out", str(tmp_path / "ts"), "--epochs", "2",
                                    "--size", "32", "--width", "4"])
    assert done.exit_code == 0, done.output
    model, tokenizer = tiny_open_clip(0)
    ipce_file = save_ipce(IPCEEvaluator(model, tokenizer, layers=(0, 1)), tmp_path / "ipce.safetensors",
                          TINY_CLIP, str(tiny_clip_file))
    from iqabench.cli import app  # the real CLI: its one error boundary prints the sentence

    for spec in (f"ipce:{ipce_file}", f"two-stream:{tmp_path / 'ts' / 'two_stream.safetensors'}"):
        out = tmp_path / spec.split(":")[0]
        result = CliRunner().invoke(app, ["train", "acpo", "--data", str(tmp_path / "data"), "--out", str(out),
                                          "--base", "tiny-sd", "--evaluator", spec, "--max-steps", "1",
                                          "--resolution", "64", "--rollout-steps", "2", "--t-max", "20",
                                          "--save-every", "1"])
        assert result.exit_code == 0, result.output
        assert (out / "pytorch_lora_weights.safetensors").is_file()
        assert json.loads((out / "lora.json").read_text())["acpo"]["x0_mode"] == "rollout"
    bad = CliRunner().invoke(app, ["train", "acpo", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x"),
                                   "--base", "tiny-sd", "--evaluator", f"ipce:{tmp_path / 'nope.safetensors'}"])
    assert bad.exit_code != 0 and "train ipce" in bad.output


@pytest.mark.parametrize("evaluator, sentence", [
    ("topiqq_nr", "unknown metric 'topiqq_nr'. Did you mean 'topiq_nr'"),
    ("metric:entropy", "--evaluator 'entropy' is not differentiable, so it cannot train ACPO"),
    ("ipce:{tmp}/missing.safetensors", "no IPCE checkpoint at {tmp}/missing.safetensors; write one with"),
    ("two-stream:{tmp}/missing.safetensors", "no two-stream checkpoint at {tmp}/missing.safetensors; write one with"),
])
def test_acpo_dry_run_resolves_the_evaluator(tmp_path, evaluator, sentence):
    """--dry-run used to print any evaluator string back; it now resolves it (no model is built) and refuses a bad
    one in one sentence, exactly as the real run would."""
    from iqabench.cli import app  # the real CLI: its one error boundary prints the sentence

    args = ["train", "acpo", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run"]
    bad = CliRunner().invoke(app, [*args, "--evaluator", evaluator.format(tmp=tmp_path)], env={"COLUMNS": "500"})
    assert bad.exit_code == 2 and "Traceback" not in bad.output, bad.output
    text = " ".join(bad.output.replace("│", " ").split())
    assert sentence.format(tmp=tmp_path) in text, text
    good = CliRunner().invoke(app, [*args, "--evaluator", "topiq_nr"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["evaluator"] == "topiq_nr"


def test_ipce_paper_schedule_trains_three_stages_each_from_the_last(tmp_path, tiny_clip_file):
    """Issue 28: --schedule paper fits one table per stage (AGIQA, AIGCIQA2023, AIGCQA-30K), each starting from
    the previous head; the last stage writes --out; a wrong table count is one sentence."""
    import typer

    from iqabench.adapters.acpo.cli import train_ipce_cmd

    tables = [synthetic_table(tmp_path / f"d{i}", n=12, seed=i) for i in range(3)]
    app = typer.Typer()
    app.command()(train_ipce_cmd)
    common = ["--clip", TINY_CLIP, "--weights", str(tiny_clip_file), "--layers", "0,1", "--device", "cpu",
              "--epochs", "5"]
    result = CliRunner().invoke(app, ["--schedule", "paper", *[a for t in tables for a in ("--table", str(t))],
                                      "--out", str(tmp_path / "ipce"), *common])
    assert result.exit_code == 0, result.output
    assert "stage 3/3 (AIGCQA-30K)" in result.output
    assert (tmp_path / "ipce" / "stage1" / "ipce.safetensors").is_file()
    assert (tmp_path / "ipce" / "stage2" / "ipce.safetensors").is_file()
    assert (tmp_path / "ipce" / "ipce.safetensors").is_file()
    bad = CliRunner().invoke(app, ["--schedule", "paper", "--table", str(tables[0]), "--out", str(tmp_path / "x"),
                                   *common])
    assert bad.exit_code != 0 and "one --table each" in bad.output
    # A stage table on another MOS scale (AIGCIQA2023-like 0-100) is refused before the first stage is fitted.
    import pandas as pd

    frame = pd.read_csv(tables[2])
    frame["score"] = frame["score"] * 20
    frame.to_csv(tables[2], index=False)
    scaled = CliRunner().invoke(app, ["--schedule", "paper", *[a for t in tables for a in ("--table", str(t))],
                                      "--out", str(tmp_path / "scaled"), *common])
    assert scaled.exit_code != 0 and "outside the MOS range 1,5" in str(scaled.exception), scaled.output
    assert not (tmp_path / "scaled").exists()


def test_ipce_checkpoint_is_a_prompt_aware_metric_in_a_run(tmp_path, tiny_clip_file):
    """Issue 28: ``ipce:<file>`` scores each generated image against its own prompt inside relgain, and the stored
    score equals the evaluator's MOS for that image and prompt."""
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec
    from iqabench.engine.runner import Runner
    from iqabench.metrics import metric_info
    from iqabench.store.store import Store

    model = tiny_clip_file  # registered under TINY_CLIP by the fixture
    import open_clip

    clip = open_clip.create_model(TINY_CLIP, pretrained=str(model))
    evaluator = IPCEEvaluator(clip.eval(), open_clip.get_tokenizer("ViT-B-32"), layers=(0, 1))
    path = save_ipce(evaluator, tmp_path / "ipce.safetensors", TINY_CLIP, str(model))
    name = f"ipce:{path}"
    assert metric_info(name).prompt_aware and not metric_info(name).lower_better
    spec = RunSpec("relgain", ["tiny-sd"], metrics=[name], prompts="smoke", limit=2)
    outcome = run(spec, out=tmp_path / "store", report=False)
    assert outcome.complete
    runner, store = Runner(spec, tmp_path / "store"), Store(tmp_path / "store")
    loaded = load_ipce(path)
    for planned, key in zip(runner.plan, runner.image_keys, strict=True):
        stored = store.get_scores([key], name, runner.metric_fps[name])[key]
        image = torch.from_numpy(np.array(store.load_image(key))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            expected = float(loaded.mos(image, [planned.item.prompt])[0])
        assert stored == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("scores, mos_range, sentence", [
    ([1.0, 2.0, 3.0], "5,1", "--mos-range '5,1': low must be below high"),
    ([3.0, 3.0, 3.0], "auto", "every MOS in the table is 3; a table whose scores are all equal has nothing"),
])
def test_train_two_stream_refuses_an_empty_mos_range_in_one_sentence(tmp_path, scores, mos_range, sentence):
    """A reversed --mos-range or a table of equal scores is the user's input: exit 2 and one sentence, where it
    used to be a ValueError shown as a bug (and the reversed range was called 'all equal')."""
    from iqabench.cli import app  # the real CLI and its one error boundary

    rows = []
    for i, score in enumerate(scores):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{tmp_path / f'{i}.png'},{score}")
    (tmp_path / "t.csv").write_text("path,score\n" + "\n".join(rows) + "\n")
    done = CliRunner().invoke(app, ["train", "two-stream", "--table", str(tmp_path / "t.csv"), "--out",
                                    str(tmp_path / "out"), "--mos-range", mos_range, "--epochs", "1", "--size", "16",
                                    "--width", "2"], env={"COLUMNS": "500"})
    assert done.exit_code == 2 and "Traceback" not in done.output and "bug" not in done.output, done.output
    assert sentence in " ".join(done.output.replace("│", " ").split()), done.output
