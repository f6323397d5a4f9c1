"""ACPO: late-window LoRA training (both x0 modes), anchor, LoRA round trip, the acpo generator, evaluators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from iqabench.adapters.acpo import (
    AcpoConfig,
    IPCEEvaluator,
    MetricEvaluator,
    TwoStreamIQA,
    evaluate_acpo,
    prepare_for_training,
    train_acpo,
    train_two_stream,
)
from iqabench.adapters.acpo.evaluators import tiny_open_clip
from iqabench.adapters.acpo.lora import LORA_FILE
from iqabench.contracts.generators import build_generator
from iqabench.contracts.specs import SpecError
from iqabench.execution.runtime import Runtime
from iqabench.metrics import build_metric, register_metric
from iqabench.support.tiny_models import tiny_sd_pipeline

RT = Runtime(device="cpu", dtype="fp32", batch_size=2)


class Brightness(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * (x.mean(dim=(1, 2, 3)) - 0.5)


register_metric("test_acpo_bright", lower_better=False, overwrite=True)(lambda device: Brightness())



def dataset(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.rand(3, 64, 64, generator=g) * 2 - 1, "caption": f"pattern {i}"}
            for i in range(n)]


def evaluator() -> MetricEvaluator:
    return MetricEvaluator(build_metric("test_acpo_bright", RT, as_loss=True))


def config(tmp_path, **kw) -> AcpoConfig:
    base = dict(output_dir=str(tmp_path / "run"), max_steps=8, learning_rate=1e-2, lambda_q=1000.0,
                lambda_anchor=0.0, batch_size=2, save_every=4, progress=False, base="tiny-sd", t_max=100,
                rollout_steps=3)  # the default x0 mode (rollout), over 3 steps instead of 10 to stay fast
    return AcpoConfig(**(base | kw))


def frozen_state(pipe) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.clone() for name in ("unet", "vae", "text_encoder")
            for k, v in getattr(pipe, name).state_dict().items() if "lora_" not in k}


def lora_state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items() if "lora_" in k}


def test_training_lowers_quality_loss_and_changes_only_lora_weights(tmp_path):
    pipe = tiny_sd_pipeline(0)
    prepare_for_training(pipe, rank=4)
    frozen, lora = frozen_state(pipe), lora_state(pipe)
    cfg = config(tmp_path)
    before = evaluate_acpo(pipe, evaluator(), dataset(), cfg)
    result = train_acpo(pipe, evaluator(), dataset(), cfg)
    after = evaluate_acpo(pipe, evaluator(), dataset(), cfg)
    assert result.step == 8 and len(result.history) == 8
    assert after["quality"] < before["quality"] - 1e-3, (before, after)
    now = frozen_state(pipe)
    assert all(torch.equal(v, now[k]) for k, v in frozen.items())
    moved = [k for k, v in lora_state(pipe).items() if not torch.equal(v, lora[k])]
    assert moved and all("lora_B" in k or "lora_A" in k for k in moved)
    out = tmp_path / "run"
    for name in (LORA_FILE, "lora.json", "losses.csv", "loss_curve.png", "loss_curve.svg",
                 f"checkpoint-4/{LORA_FILE}", "checkpoint-8/optimizer.pt"):
        assert (out / name).is_file(), name
    assert len((out / "losses.csv").read_text().strip().splitlines()) == 9


@pytest.mark.parametrize("mode", ["one-step", "rollout"])
def test_only_timesteps_in_the_late_window_are_drawn_for_the_late_terms(tmp_path, mode):
    pipe = tiny_sd_pipeline(0)
    seen: list[torch.Tensor] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(torch.as_tensor(args[1]).flatten()))
    train_acpo(pipe, evaluator(), dataset(), config(tmp_path, max_steps=6, t_max=20, x0_mode=mode,
                                                    rollout_steps=3, lambda_q=1.0, mse_window="late"))
    drawn = torch.cat(seen)
    assert drawn.max() <= 20 and drawn.min() >= 0
    calls_per_step = len(seen) / 6
    assert calls_per_step == (4 if mode == "rollout" else 2)  # frozen + LoRA at t, plus 2 more rollout steps
    assert len(set(drawn.tolist())) > 3  # really random within the window


def test_the_denoising_mse_covers_all_timesteps_by_default(tmp_path):
    """ACPO keeps the original MSE throughout; only the anchor and quality terms are restricted to t <= T_max."""
    pipe = tiny_sd_pipeline(0)
    seen: list[torch.Tensor] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(torch.as_tensor(args[1]).flatten()))
    result = train_acpo(pipe, evaluator(), dataset(), config(tmp_path, max_steps=6, t_max=20, x0_mode="one-step",
                                                             lambda_q=1.0))
    assert len(seen) == 6 * 3  # frozen and LoRA at the late t, LoRA at t_mse
    late = torch.cat([seen[i] for i in range(len(seen)) if i % 3 != 2])
    mse = torch.cat([seen[i] for i in range(len(seen)) if i % 3 == 2])
    assert late.max() <= 20
    assert mse.max() > 100  # 12 draws over 1000 timesteps: all <= 20 has probability ~1e-20
    assert all(row["t_mse_max_drawn"] >= row["t_mse_min_drawn"] for row in result.history)


def test_acpo_defaults_are_the_papers():
    from iqabench.adapters.acpo.cli import train_acpo_cmd
    from iqabench.adapters.acpo.config import ALL_LINEAR

    cfg = AcpoConfig(output_dir="x")
    assert cfg.x0_mode == "rollout" and cfg.rollout_steps == 10  # Table 8
    assert cfg.mse_window == "all"  # MSE throughout, late window for the perceptual/anchor terms
    assert cfg.lora_targets == (ALL_LINEAR,)  # LoRA on the U-Net's linear layers
    assert (cfg.learning_rate, cfg.max_steps, cfg.t_max, cfg.lambda_q) == (2e-5, 1000, 100, 0.1)
    import inspect

    defaults = {name: p.default.default for name, p in inspect.signature(train_acpo_cmd).parameters.items()
                if hasattr(p.default, "default")}
    assert defaults["base"] == "sd14"  # SD v1.4, the paper's base
    assert defaults["x0_mode"] == "rollout" and defaults["rollout_steps"] == 10
    assert defaults["mse_window"] == "all" and defaults["lora_targets"] == ALL_LINEAR
    from iqabench.adapters.acpo.config import resolve_lambda_q

    assert defaults["lambda_q"] == "appendix"  # the named reading (issue 28) of the appendix's 0.1
    assert (defaults["lr"], defaults["max_steps"], defaults["t_max"], resolve_lambda_q(defaults["lambda_q"])) == (
        2e-5, 1000, 100, 0.1)


def test_lora_goes_on_every_linear_layer_of_the_unet_by_default():
    from iqabench.adapters.acpo.lora import ATTENTION_TARGETS

    pipe = tiny_sd_pipeline(0)
    linears = {n for n, m in pipe.unet.named_modules() if isinstance(m, nn.Linear)}
    prepare_for_training(pipe)
    wrapped = {n for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == linears and any("time_embedding" in n for n in wrapped) and any("ff.net" in n for n in wrapped)
    convs = {n for n, m in pipe.unet.named_modules() if isinstance(m, nn.Conv2d)}
    assert not wrapped & convs  # 1x1 proj_in convs of SD 1.x stay untouched
    attention_only = tiny_sd_pipeline(0)
    prepare_for_training(attention_only, targets=ATTENTION_TARGETS)
    narrow = {n for n, m in attention_only.unet.named_modules() if hasattr(m, "lora_A")}
    assert narrow and narrow < wrapped and all(n.split(".")[-1] in ("to_q", "to_k", "to_v", "0") for n in narrow)


def test_large_anchor_keeps_the_lora_model_closer_to_the_base(tmp_path):
    distances = {}
    for weight in (0.0, 1e4):
        pipe = tiny_sd_pipeline(0)
        cfg = config(tmp_path / str(weight), lambda_anchor=weight, max_steps=6)
        train_acpo(pipe, evaluator(), dataset(), cfg)
        distances[weight] = evaluate_acpo(pipe, evaluator(), dataset(), cfg)["anchor"]
    assert distances[1e4] < 0.5 * distances[0.0], distances


def test_lora_round_trips_to_identical_images_and_the_generator_compares_with_its_base(tmp_path):
    pipe = tiny_sd_pipeline(0)
    train_acpo(pipe, evaluator(), dataset(), config(tmp_path, max_steps=3, save_every=3))

    def images(p):
        g = [torch.Generator("cpu").manual_seed(s) for s in (0, 1)]
        return p(["a cat", "a car"], num_inference_steps=4, height=64, width=64, guidance_scale=7.5, generator=g,
                 output_type="np").images

    trained = images(pipe)
    generator = build_generator(f"acpo:{tmp_path / 'run'}", RT)
    assert generator.baseline() == "tiny-sd[guidance_scale=7.5,height=64,seed=0,steps=4,width=64]"
    assert generator.fingerprint()["lora_sha256"] != build_generator(generator.baseline(), RT).fingerprint().get(
        "lora_sha256")
    reloaded = images(generator.pipeline)
    base = images(build_generator(generator.baseline(), RT).pipeline)
    assert np.array_equal(trained, reloaded)
    assert not np.array_equal(trained, base)


def test_acpo_spec_errors_are_one_sentence(tmp_path):
    with pytest.raises(SpecError, match="holds no pytorch_lora_weights"):
        build_generator(f"acpo:{tmp_path}", RT)
    with pytest.raises(ValueError, match="x0_mode 'two-step' is unknown"):
        AcpoConfig(output_dir=str(tmp_path), x0_mode="two-step")
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (tmp_path / "lora.json").write_text("{not json")
    with pytest.raises(SpecError, match="lora.json is not valid JSON"):
        build_generator(f"acpo:{tmp_path}", RT)
    (tmp_path / "lora.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="should hold a JSON object"):
        build_generator(f"acpo:{tmp_path}", RT)


def test_unconditional_ddpm_unet_trains_lora_only(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    data = [{"pixel_values": torch.rand(3, 16, 16) * 2 - 1, "caption": ""} for _ in range(2)]
    result = train_acpo(pipe, evaluator(), data, config(tmp_path, max_steps=2, save_every=2, base=None))
    assert result.step == 2 and np.isfinite(result.history[-1]["total"])
    state = {k.replace("base_layer.", ""): v for k, v in unet.state_dict().items()}  # peft's wrapped layers
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
    assert (tmp_path / "run" / LORA_FILE).is_file()


# -- evaluators --------------------------------------------------------------------------------------------
def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(1)).requires_grad_(True)


def test_ipce_evaluator_is_bounded_with_nonzero_gradient():
    model, tokenizer = tiny_open_clip(0)
    scorer = IPCEEvaluator(model, tokenizer, layers=(0, 1), layer_weights=(0.5, 2.0), global_weight=3.0)
    images = _images()
    s_global, s_local = scorer.components(images, ["a cat", "a red car"])
    assert s_global.shape == (2,) and s_local.shape == (2, 2)
    assert torch.all(s_global.abs() <= 1) and torch.all(s_local.abs() <= 1)
    q = scorer(images, ["a cat", "a red car"])
    expected = torch.sigmoid(3.0 * s_global + 0.5 * s_local[:, 0] + 2.0 * s_local[:, 1])
    torch.testing.assert_close(q, expected)
    assert torch.all((q > 0) & (q < 1))
    (grad,) = torch.autograd.grad(q.sum(), images)
    assert grad.abs().sum() > 0
    assert not torch.allclose(q, scorer(images, ["a cat", "something else entirely"]))


def test_two_stream_network_is_bounded_differentiable_and_trains_on_mos():
    torch.manual_seed(0)
    model = TwoStreamIQA(width=4, hidden=16, size=32)
    images = _images(16)
    q = model(images)
    assert torch.all((q > 0) & (q < 1))
    (grad,) = torch.autograd.grad(q.sum(), images)
    assert grad.abs().sum() > 0
    sharp = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    blur = torch.nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2)
    weights = torch.linspace(0, 1, 16)[:, None, None, None]
    data = weights * sharp + (1 - weights) * blur
    mos = 1 + 4 * torch.linspace(0, 1, 16)  # MOS 1..5: the sharper, the better
    losses = train_two_stream(model, data, mos, epochs=25, lr=3e-3, batch_size=8)
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_acpo_command_writes_a_lora_the_generator_loads(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner


    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    from iqabench.cli import app  # the real CLI: its one error boundary prints the sentence

    out = tmp_path / "lora"
    result = CliRunner().invoke(app, ["train", "acpo", "--data", str(folder), "--out", str(out), "--base", "tiny-sd",
                                      "--evaluator", "test_acpo_bright", "--max-steps", "1", "--resolution", "64",
                                      "--x0-mode", "rollout", "--rollout-steps", "2", "--save-every", "1"])
    assert result.exit_code == 0, result.output
    assert f"acpo:{out}" in result.output
    assert build_generator(f"acpo:{out}", RT).baseline().startswith("tiny-sd[")
    bad = CliRunner().invoke(app, ["train", "acpo", "--data", str(folder), "--out", str(out), "--evaluator", "x",
                                   "--x0-mode", "nope"])
    assert bad.exit_code != 0 and "x0_mode 'nope' is unknown" in bad.output


def test_resume_continues_from_the_last_checkpoint_as_the_uninterrupted_run(tmp_path):
    straight = tiny_sd_pipeline(0)
    train_acpo(straight, evaluator(), dataset(), config(tmp_path / "a", max_steps=4, save_every=2))
    first = tiny_sd_pipeline(0)
    train_acpo(first, evaluator(), dataset(), config(tmp_path / "b", max_steps=2, save_every=2))
    resumed = tiny_sd_pipeline(0)
    result = train_acpo(resumed, evaluator(), dataset(), config(tmp_path / "b", max_steps=4, save_every=2))
    assert result.resumed_from == 2 and result.step == 4 and [r["step"] for r in result.history] == [3, 4]
    want, got = lora_state(straight), lora_state(resumed)
    assert set(want) == set(got)
    assert all(torch.allclose(want[k], got[k], atol=1e-6, rtol=1e-5) for k in want)
    halfway = lora_state(first)
    assert not all(torch.allclose(want[k], halfway[k], atol=1e-6, rtol=1e-5) for k in want)  # steps 3-4 matter


def test_cli_maps_the_metric_score_range_onto_q():
    from iqabench.adapters.acpo.evaluator_spec import score_range

    assert score_range("topiq_nr") == (0.0, 1.0)  # pyiqa declares "~0, ~1"
    assert score_range("piqe") == (0.0, 100.0)
