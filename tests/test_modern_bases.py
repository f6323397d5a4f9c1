"""Issue 25: SD3 / FLUX.1 (dev-like and schnell-like) / PixArt-Sigma benchmarked correctly, offline.

Tiny random pipelines of each family (iqabench.support.tiny_modern) and their hub-mirror snapshots under the real ids
(tests/hub_mirror/modern.py); 2 steps, 64 px, one or two images per side. Numbers mean nothing (random
weights); what is asserted is what each family's comparison *means* and that every benchmark runs over it.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from iqabench.api import run
from iqabench.contracts.generators import GeneratorPool, WorkItem, build_generator, canonical_spec, register_generator
from iqabench.contracts.specs import RunSpec, SpecError
from iqabench.engine.runner import GeneratorBrokenError
from iqabench.execution.runtime import Runtime
from iqabench.metrics import register_metric


class Brightness(nn.Module):
    """A smooth differentiable stand-in for an NR metric (mean pixel value + 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 + x.mean(dim=(1, 2, 3))


register_metric("test_bright25", lower_better=False, overwrite=True)(lambda device: Brightness())

RT = Runtime(device="cpu", dtype="fp32", batch_size=1)
TINY = {"sd3": "tiny-sd3[steps=2]", "flux-dev": "tiny-flux[steps=2]", "flux-schnell": "tiny-flux-schnell[steps=2]",
        "pixart": "tiny-pixart[steps=2]"}
#: gradient guidance strength per family on the tiny random models (their VAE gradients are ~1e-3 per latent)
ALPHA = 2000.0


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.float64) for im in images]


# -- the tiny models and what each family means ----------------------------------------------------------------
def test_tiny_models_are_the_real_classes_with_offline_tokenizers():
    from iqabench.support import tiny_modern

    t5 = tiny_modern.tiny_t5_tokenizer()
    ids = t5("a photo of a red cat").input_ids
    assert len(t5) == tiny_modern.T5_VOCAB and ids[-1] == t5.eos_token_id == 1 and t5.pad_token_id == 0
    assert t5.unk_token_id not in ids  # trained on English words: a plain prompt has no unknown piece
    assert tiny_modern.t5_sentencepiece_model() == tiny_modern.t5_sentencepiece_model.__wrapped__()  # deterministic
    assert {f: build_generator(spec, RT).pipeline_family.name for f, spec in TINY.items()} == {f: f for f in TINY}
    dev, schnell = tiny_modern.tiny_flux_pipeline(), tiny_modern.tiny_flux_schnell_pipeline()
    assert type(dev).__name__ == type(schnell).__name__ == "FluxPipeline"
    assert dev.transformer.config.guidance_embeds and not schnell.transformer.config.guidance_embeds


def test_each_family_has_an_honest_baseline():
    pool = GeneratorPool(RT)
    assert pool.baseline("tiny-sd3[steps=2]") == "tiny-sd3[guidance_scale=1.0,steps=2]"  # CFG off
    assert pool.baseline("tiny-pixart[steps=2]") == "tiny-pixart[guidance_scale=1.0,steps=2]"
    dev = pool.get("tiny-flux[steps=2]")
    assert dev.baseline() == "tiny-flux[guidance_scale=1.0,steps=2]" and "embedded guidance 1.0" in dev.baseline_note
    true_cfg = pool.get("tiny-flux[negative_prompt=blurry,steps=2,true_cfg_scale=4.0]")
    assert true_cfg.baseline() == "tiny-flux[negative_prompt=blurry,steps=2,true_cfg_scale=1.0]"
    # without a negative prompt diffusers runs no true CFG: said so, and the baseline is embedded guidance 1.0
    with pytest.warns(UserWarning, match="true_cfg_scale has no effect without negative_prompt"):
        no_negative = build_generator("tiny-flux[steps=2,true_cfg_scale=4.0]", RT)
    assert no_negative.baseline() == "tiny-flux[guidance_scale=1.0,steps=2,true_cfg_scale=4.0]"
    assert "embedded guidance 1.0" in no_negative.baseline_note
    with pytest.raises(ValueError, match="FLUX.1-schnell-like .* no 'same model without guidance'; pass --baseline"):
        pool.baseline("tiny-flux-schnell[steps=2]")
    assert pool.baseline("tiny-flux-schnell[steps=2]", "tiny-flux-schnell[steps=4]") == "tiny-flux-schnell[steps=4]"


def test_family_options_reach_the_pipeline_or_are_refused_or_warned_about():
    with pytest.raises(SpecError, match="true_cfg_scale= has no meaning for a Stable Diffusion 3 pipeline"):
        build_generator("tiny-sd3[true_cfg_scale=2.0]", RT)
    with pytest.raises(SpecError, match="use_resolution_binning= has no meaning"):
        build_generator("tiny-flux[use_resolution_binning=true]", RT)
    with pytest.raises(SpecError, match="unknown option 'max_sequence_length'"):
        build_generator("tiny-sd[max_sequence_length=77]", RT)
    with pytest.warns(UserWarning, match="negative_prompt has no effect .* unless true_cfg_scale > 1"):
        build_generator("tiny-flux[negative_prompt=blurry]", RT)
    with pytest.warns(UserWarning, match="guidance_scale has no effect on a FLUX.1-schnell"):
        build_generator("tiny-flux-schnell[guidance_scale=3.0]", RT)
    with pytest.warns(UserWarning, match="PixArt samples at 256x256 .* resizes to the asked 64x64"):
        binned = build_generator("tiny-pixart[use_resolution_binning=true]", RT)
    fp = binned.fingerprint()
    assert fp["sampled_size"] == [256, 256] and fp["use_resolution_binning"] is True
    assert set(fp["caption_libs"]) == {"bs4", "ftfy"} and isinstance(fp["clean_caption"], bool)
    plain_generator = build_generator("tiny-pixart[steps=2]", RT)
    plain = plain_generator.fingerprint()
    assert "sampled_size" not in plain and plain["use_resolution_binning"] is False
    # and the option reaches the pipeline: binned, 64 px is sampled at 256 px and resized, so other pixels
    with pytest.warns(UserWarning, match="PixArt samples at 256x256"):
        binned_2 = build_generator("tiny-pixart[steps=2,use_resolution_binning=true]", RT)
    cat = [WorkItem("p", "a cat", 0)]
    binned_image, plain_image = binned_2.generate(cat)[0], plain_generator.generate(cat)[0]
    assert binned_image.size == plain_image.size == (64, 64)
    assert not np.array_equal(*_pixels([binned_image, plain_image]))
    # max_sequence_length and true_cfg_scale change the pipeline call, hence the images and the cache key
    long, short = (build_generator(f"tiny-flux[max_sequence_length={n},steps=2]", RT) for n in (32, 8))
    assert long.fingerprint() != short.fingerprint()
    item = [WorkItem("p", "a red cat sitting on a wooden bench in the evening sun", 0)]
    assert not np.array_equal(*_pixels([long.generate(item)[0], short.generate(item)[0]]))
    cfg = build_generator("tiny-flux[negative_prompt=blurry,steps=2,true_cfg_scale=4.0]", RT)
    off = build_generator("tiny-flux[negative_prompt=blurry,steps=2,true_cfg_scale=1.0]", RT)
    assert not np.array_equal(*_pixels([cfg.generate(item)[0], off.generate(item)[0]]))


def test_iqa_adapter_and_acpo_are_refused_on_bases_without_unet_cross_attention(tmp_path):
    from test_iqa_adapter_generator import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    for base in ("tiny-sd3", "tiny-flux", "tiny-pixart"):
        with pytest.raises(SpecError, match="IQA-Adapter adds decoupled quality keys and values to a UNet's "
                                            "cross-attention layers, but base .* no UNet"):
            build_generator(f"iqa-adapter:{checkpoint}[base={base}]", RT)
    from iqabench.adapters.acpo.lora import LORA_FILE

    (tmp_path / "acpo").mkdir()
    (tmp_path / "acpo" / LORA_FILE).write_bytes(b"")  # never read: the base is refused before the LoRA is loaded
    with pytest.raises(SpecError, match="ACPO's checkpoints are LoRA weights for a UNet's attention layers, but base "
                                        "'tiny-sd3' is a Stable Diffusion 3 pipeline .*no UNet"):
        build_generator(f"acpo:{tmp_path / 'acpo'}[base=tiny-sd3]", RT)


# -- gradient guidance on flow-matching and transformer bases ---------------------------------------------------
@pytest.mark.parametrize("family", ["sd3", "flux-dev", "flux-schnell", "pixart"])
def test_guided_metric_rises_with_alpha_and_falls_with_minus_alpha(family):
    """v_hat = v - alpha*omega*g/(1-s) on SD3/FLUX (FLUX's packed latents unpacked), eps on PixArt."""
    base = TINY[family].replace("steps=2", "steps=3")
    items = [WorkItem("p0", "a photo of a cat", 0)]
    bright = {}
    for alpha in (0.0, ALPHA, -ALPHA):
        generator = build_generator(f"guidance:test_bright25[alpha={alpha},base={base}]", RT)
        bright[alpha] = _pixels(generator.generate(items))[0].mean()
        if alpha:
            assert [r.omega for r in generator.guidance().trace] == [0.0, 0.5, 1.0]
    assert bright[ALPHA] > bright[0.0] > bright[-ALPHA]


def test_flow_schedule_level_and_truthful_unsupported_message():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from iqabench.adapters.guidance import noise_level
    from iqabench.adapters.guidance.schedule import UnsupportedSchedulerError

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    level = noise_level(scheduler, scheduler.timesteps[2])
    assert level.flow and level.sigma == pytest.approx(float(scheduler.sigmas[2])) and 0 < level.sigma < 1

    class NoTable:
        timesteps = torch.tensor([999, 500])
        sigmas = torch.tensor([1.0, 0.5, 0.0])
        init_noise_sigma = 1.0
        step_index = 0

    with pytest.raises(UnsupportedSchedulerError, match="has no alphas_cumprod and a sigma table, but its "
                                                        "init_noise_sigma is 1 .* not a flow-matching scheduler"):
        noise_level(NoTable(), 999)


def test_tiny_decoder_defaults_follow_the_latent_space():
    from iqabench.adapters.guidance.tiny_decoder import default_tiny_decoder

    assert default_tiny_decoder("StableDiffusion3Pipeline") == "madebyollin/taesd3"
    assert default_tiny_decoder("FluxPipeline") == "madebyollin/taef1"
    assert default_tiny_decoder("PixArtSigmaPipeline") == "madebyollin/taesdxl"
    # PixArt by its VAE: Sigma's is SDXL's (0.13025), alpha's SD 1.x's (0.18215, TAESD)
    assert default_tiny_decoder("PixArtSigmaPipeline", 0.13025) == "madebyollin/taesdxl"
    assert default_tiny_decoder("PixArtAlphaPipeline", 0.18215) == "madebyollin/taesd"
    assert default_tiny_decoder("StableDiffusionXLPipeline") == "madebyollin/taesdxl"
    generator = build_generator(f"guidance:test_bright25[alpha={ALPHA},base=tiny-flux[steps=2],decoder=tiny]", RT)
    image = generator.generate([WorkItem("p0", "a cat", 0)])[0]
    assert image.size == (64, 64) and generator.guidance()._decoder.config.latent_channels == 16


# -- benchmarks over every family, offline ---------------------------------------------------------------------
def _relgain(tmp_path, generators, baseline=None, **kw):
    spec = RunSpec("relgain", generators, metrics=["entropy"], prompts="smoke", limit=1, seeds=[0, 1],
                   batch_size=1, baseline=baseline, **kw)
    return run(spec, out=tmp_path)


@pytest.mark.parametrize("family", ["sd3", "flux-dev", "pixart"])
def test_relgain_scores_seed_consistency_and_guidance_over_each_family(family, tmp_path):
    base = TINY[family]
    guided = f"guidance:test_bright25[alpha={ALPHA},base={base}]"
    outcome = _relgain(tmp_path, [base, guided])
    table = outcome.result.tables["relgain"].set_index("generator")
    assert np.isfinite(table["relgain"]).all() and not table["identical_to_baseline"].any()
    scale = {"sd3": "4.5", "flux-dev": "3.5", "pixart": "4.5"}[family]  # guidance's baseline: its base, as is
    assert table.loc[guided, "baseline"].startswith(base.split("[")[0] + f"[guidance_scale={scale},")
    assert table.loc[base, "baseline"] == base.replace("[", "[guidance_scale=1.0,")
    assert outcome.complete and "identical_to_baseline" not in outcome.result.summary
    if family == "flux-dev":  # labelled for the base model's comparison, not for guidance's (its base is it)
        assert [n for n in outcome.result.notes if "embedded guidance 1.0" in n] == [
            f"baseline of {base}: embedded guidance 1.0 (FLUX-dev's guidance_scale is an input of the distilled "
            "model, not CFG; it runs no CFG either way)"]
        from rich.console import Console

        from iqabench.cli import summary

        console = Console(width=100, record=True)
        original, summary.out_console = summary.out_console, console
        try:  # said on the terminal too, under the grid, not only in the report
            summary.print_summary(outcome.result)
        finally:
            summary.out_console = original
        assert f"note: baseline of {base}: embedded guidance 1.0" in " ".join(console.export_text().split())
    scores = run(RunSpec("scores", [base], metrics=["entropy"], prompts="smoke", limit=1, seeds=[0, 1]), out=tmp_path)
    assert scores.plan.n_to_generate == 0 and scores.result.tables["scores"]["n"].tolist() == [2]
    seeds = run(RunSpec("seed-consistency", [base], metrics=["entropy"], prompts="smoke", limit=1, seeds=[0, 1]),
                out=tmp_path)
    assert seeds.plan.n_to_generate == 0 and seeds.complete


def test_flux_schnell_needs_a_baseline_and_identical_sides_are_never_a_measured_zero(tmp_path):
    with pytest.raises(ValueError, match="no 'same model without guidance'; pass --baseline"):
        _relgain(tmp_path, [TINY["flux-schnell"]])
    # guidance_scale changes nothing on schnell: both sides make the same pixels under different keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = _relgain(tmp_path, [TINY["flux-schnell"]], baseline="tiny-flux-schnell[guidance_scale=5.0,steps=2]")
    row = outcome.result.tables["relgain"].iloc[0]
    assert bool(row["identical_to_baseline"]) and np.isnan(row["relgain"]) and np.isnan(row["relgain_ci_low"])
    assert outcome.result.summary["identical_to_baseline"] == {
        "tiny-flux-schnell[steps=2]": "tiny-flux-schnell[guidance_scale=5.0,steps=2]"}
    assert any("pixel-identical images for all 2 paired item(s)" in note for note in outcome.result.notes)
    per_item = outcome.result.tables["relgain_per_item"]
    assert (per_item["status"] == "identical to baseline").all()
    # only the effect is blank: both sides' scores are measured levels, kept for `report A B`
    assert np.isfinite(per_item["generator_score"]).all() and per_item["relgain"].isna().all()
    assert (per_item["generator_score"] == per_item["baseline_score"]).all()
    assert np.isfinite(row["generator_mean"]) and row["generator_mean"] == row["baseline_mean"]
    paired = outcome.result.tables["paired_statistics"].iloc[0]
    assert np.isfinite(paired["generator_mean"]) and paired[["improvement", "p_value", "win_rate"]].isna().all()
    assert np.isfinite(outcome.result.per_item.frame["score"]).all()
    # and the terminal says why the cell is blank, under the grid
    from rich.console import Console

    from iqabench.cli import summary

    console = Console(width=100, record=True)
    original, summary.out_console = summary.out_console, console
    try:
        summary.print_summary(outcome.result)
    finally:
        summary.out_console = original
    assert "note: tiny-flux-schnell[steps=2] and its baseline tiny-flux-schnell[guidance_scale=5.0,steps=2] made " \
           "pixel-identical images" in " ".join(console.export_text().split())
    # seed-consistency over the same pairs (cached): its gains blanked too, never a 0.00 mean
    seeds = run(RunSpec("seed-consistency", [TINY["flux-schnell"]], metrics=["entropy"], prompts="smoke", limit=1,
                        seeds=[0, 1], baseline="tiny-flux-schnell[guidance_scale=5.0,steps=2]"), out=tmp_path)
    summary = seeds.result.tables["seed_consistency"].iloc[0]
    assert seeds.plan.n_to_generate == 0 and bool(summary["identical_to_baseline"])
    assert summary[["mean", "mean_ci_low", "median", "improved_share", "p_value"]].isna().all()
    assert seeds.result.tables["per_generation"]["relgain"].isna().all()
    assert any("pixel-identical images for all 2 paired item(s)" in note for note in seeds.result.notes)
    # a real comparison on schnell (guided vs its base) is measured
    guided = _relgain(tmp_path, [f"guidance:test_bright25[alpha={ALPHA},base={TINY['flux-schnell']}]"])
    assert np.isfinite(guided.result.tables["relgain"]["relgain"]).all()


def test_geneval_and_fid_topk_run_over_every_family_tiny_and_through_its_preset(hub_mirror, monkeypatch, tmp_path):
    """GenEval over the four tiny models and the four presets on their hub-mirror snapshots, in one run (the
    detector and CLIP built once); fid-topk over each family once, two tiny and two presets (it reads only the
    images, and every FID is a 2048-d matrix square root: one per generator and subset)."""
    from test_fid_topk import _reference

    hub_mirror.ensure("hf-modern").apply(monkeypatch)
    generators = [canonical_spec(g) for g in [*TINY.values(), *PRESETS.values()]]
    geneval = run(RunSpec("geneval", generators, prompts="geneval", seeds=[0], batch_size=1, limit=2,
                          options={"weights": "random", "per_task": 1, "images_per_prompt": 1}), out=tmp_path)
    table = geneval.result.tables["geneval_numeric"]
    assert geneval.complete and (table.loc[generators, "n_images"] == 2).all()
    folder = _reference(tmp_path, 2)
    generators = [canonical_spec(g) for g in (TINY["sd3"], PRESETS["flux-dev"], TINY["flux-schnell"],
                                              PRESETS["pixart"])]
    fid = run(RunSpec("fid-topk", generators, metrics=["entropy"], batch_size=1,
                      options={"reference": str(folder / "pairs.csv"), "weights": "random", "topk": "50",
                               "allow_small_topk": True, "kid_subsets": 2}), out=tmp_path)
    numeric = fid.result.tables["fid_topk_numeric"]
    assert fid.complete and np.isfinite(numeric.loc[generators, "FID"].astype(float)).all()


@pytest.mark.parametrize("family", ["sd3", "flux-dev", "flux-schnell", "pixart"])
def test_adversarial_gradcam_robustness_runs_over_each_family(family, tmp_path):
    spec = RunSpec("adversarial-gradcam", [], metrics=["entropy"], limit=1, seeds=[0], batch_size=1,
                   options={"guided_metrics": "test_bright25", "base": TINY[family], "alpha": ALPHA, "cam_items": 1})
    outcome = run(spec, out=tmp_path)
    assert outcome.complete and len(outcome.result.tables)


# -- a generator that cannot work stops the run at its first image ----------------------------------------------
class _Broken:
    def __init__(self, spec, runtime):
        self.calls = 0

    def fingerprint(self):
        return {"class": "broken-test/v1"}

    def baseline(self):
        return None

    def generate(self, items):
        _Broken.calls += 1
        raise AttributeError("'StableDiffusion3Pipeline' object has no attribute 'unet'")


def test_first_image_failing_with_a_permanent_error_stops_the_run(tmp_path):
    _Broken.calls = 0
    register_generator("broken-test", overwrite=True)(lambda spec, runtime: _Broken(spec, runtime))
    with pytest.raises(GeneratorBrokenError, match="failed on its first image with AttributeError: .* the rest "
                                                   "were not attempted"):
        run(RunSpec("scores", ["broken-test"], metrics=["entropy"], prompts="smoke", limit=3, seeds=[0, 1],
                    batch_size=1), out=tmp_path)
    assert _Broken.calls == 1


def test_non_finite_latents_are_caught_on_pixart_which_has_no_step_callback():
    """PixArt-Sigma's pipeline takes no callback_on_step_end, so its decoded images are checked instead."""
    import inspect

    from iqabench.execution.image_checks import GeneratedImageError

    generator = build_generator(TINY["pixart"], RT)
    assert "callback_on_step_end" not in inspect.signature(type(generator.pipeline).__call__).parameters
    with torch.no_grad():
        generator.pipeline.transformer.proj_out.weight.fill_(float("nan"))
    with pytest.raises(GeneratedImageError, match="produced non-finite latents .* for p0"):
        generator.generate([WorkItem("p0", "a cat", 0)])


# -- the presets over their hub-mirror snapshots (real ids, real layouts) -----------------------------------
SMALL = "steps=2,height=64,width=64,max_sequence_length=32"


def test_presets_load_their_hub_snapshots_and_run_relgain_and_guidance(hub_mirror, monkeypatch, tmp_path):
    mirror = hub_mirror.ensure("hf-modern").apply(monkeypatch)
    generators = [f"sd35[{SMALL}]", f"flux-dev[{SMALL}]", f"pixart-sigma[{SMALL},use_resolution_binning=false]",
                  f"guidance:test_bright25[alpha={ALPHA},base=flux-dev,{SMALL}]"]
    outcome = _relgain(tmp_path, generators)
    table = outcome.result.tables["relgain"].set_index("generator")
    assert np.isfinite(table["relgain"]).all() and outcome.complete
    for benchmark in ("scores", "seed-consistency"):  # the relgain images, reused from the cache
        again = run(RunSpec(benchmark, generators[:3], metrics=["entropy"], prompts="smoke", limit=1, seeds=[0, 1],
                            batch_size=1), out=tmp_path)
        assert again.complete and again.plan.n_to_generate == 0
    pool = GeneratorPool(RT)
    assert pool.get(f"flux-dev[{SMALL}]").fingerprint()["family"] == "flux-dev"
    assert pool.get(f"flux-schnell[{SMALL}]").fingerprint()["family"] == "flux-schnell"
    with pytest.raises(ValueError, match="pass --baseline"):
        pool.baseline("flux-schnell")
    # the defaults are the published ones
    defaults = {f: build_generator(f, RT).options for f in ("sd35", "flux-dev", "flux-schnell", "pixart-sigma")}
    assert [(o["steps"], o["guidance_scale"], o["height"]) for o in defaults.values()] == [
        (40, 4.5, 1024), (50, 3.5, 1024), (4, 0.0, 1024), (20, 4.5, 1024)]
    assert defaults["flux-schnell"]["max_sequence_length"] == 256
    # and diffusers:<folder> of a snapshot is recognised as its family
    folder = mirror.written["hf-modern"]["black-forest-labs/FLUX.1-schnell"]
    direct = build_generator(f"diffusers:{folder}[steps=2,height=64,width=64]", RT)
    assert direct.pipeline_family.name == "flux-schnell" and direct.baseline() is None
    image = direct.generate([WorkItem("p", "a cat", 0)])[0]
    assert isinstance(image, Image.Image) and pd.notna(image.size[0])


#: every family through its preset over the hub-mirror snapshot (PixArt without its 1024-px bins at 64 px)
PRESETS = {"sd3": f"sd35[{SMALL}]", "flux-dev": f"flux-dev[{SMALL}]", "flux-schnell": f"flux-schnell[{SMALL}]",
           "pixart": f"pixart-sigma[{SMALL},use_resolution_binning=false]"}


def test_presets_run_guidance_schnell_relgain_and_the_robustness_benchmarks_over_their_snapshots(
        hub_mirror, monkeypatch, tmp_path):
    """guidance:<metric>[base=preset] over every family, schnell's refusal and its --baseline, adversarial-gradcam
    per family on the same images; the IQA-Adapter sweeps are refused in one sentence (no UNet to condition)."""
    hub_mirror.ensure("hf-modern").apply(monkeypatch)
    guided = {f: GeneratorPool.wrap("guidance", "test_bright25", spec, alpha=ALPHA) for f, spec in PRESETS.items()}
    spec = {"metrics": ["entropy"], "prompts": "smoke", "limit": 1, "seeds": [0], "batch_size": 1}
    outcome = run(RunSpec("relgain", [guided[f] for f in ("sd3", "flux-schnell", "pixart")], **spec), out=tmp_path)
    table = outcome.result.tables["relgain"].set_index("generator")
    assert outcome.complete and np.isfinite(table["relgain"]).all() and not table["identical_to_baseline"].any()
    # guidance's baseline is its base as is (schnell's published guidance_scale 0 spelled out)
    assert table.loc[guided["flux-schnell"], "baseline"] == canonical_spec(
        PRESETS["flux-schnell"].replace("[", "[guidance_scale=0.0,"))
    with pytest.raises(ValueError, match="no 'same model without guidance'; pass --baseline"):
        run(RunSpec("relgain", [PRESETS["flux-schnell"]], **spec), out=tmp_path)
    schnell = run(RunSpec("relgain", [PRESETS["flux-schnell"]], baseline=PRESETS["flux-schnell"].replace(
        "steps=2", "steps=3"), **spec), out=tmp_path)
    assert schnell.complete and np.isfinite(schnell.result.tables["relgain"]["relgain"]).all()
    for family, preset in PRESETS.items():
        gradcam = run(RunSpec("adversarial-gradcam", [], options={"guided_metrics": "test_bright25", "base": preset,
                                                                   "alpha": ALPHA, "cam_items": 1}, **spec),
                      out=tmp_path)
        row = gradcam.result.tables["transfer_matrix"].set_index("method").loc["guidance on test_bright25"]
        assert gradcam.complete and np.isfinite(row["test_bright25"]), family
        if family != "flux-dev":  # the relgain run above made the base and guided images
            assert gradcam.plan.n_to_generate == 0, family
        for sweep in ("condition-sweep", "scale-sweep", "fr-distances"):
            with pytest.raises(ValueError, match=f"benchmark '{sweep}' sweeps target.*which generator .* does not "
                                                 "take; use a quality-conditioned generator"):
                run(RunSpec(sweep, [preset], **spec), out=tmp_path)


# -- review fixes ----------------------------------------------------------------------------------------------
def test_two_spellings_of_one_model_are_refused_at_plan_time_and_a_shared_key_counts_as_identical(tmp_path):
    """--baseline naming the generator's own defaults gives the same image keys: refused before any image."""
    from iqabench.analysis.identical import PixelDigests

    own = re.escape("its own baseline: both specs make the same images (same cache keys)")
    for benchmark in ("relgain", "seed-consistency"):
        spec = RunSpec(benchmark, ["tiny-sd[steps=2]"], metrics=["entropy"], prompts="smoke", limit=1, seeds=[0, 1],
                       baseline="tiny-sd[steps=2,guidance_scale=7.5]")
        with pytest.raises(ValueError, match=own):
            run(spec, out=tmp_path)
    assert not list(tmp_path.rglob("*.png"))  # refused before any work
    # the backstop: a pair of one key is one image on both sides, an identical pair (no image read)
    digests = PixelDigests(lambda key: tmp_path / f"{key}.png")
    assert digests.count([("k1", "k1"), ("k2", "k2")]) == (2, 2)
    assert digests.all_identical([("k1", "k1")]) == (True, 1)


def test_a_preset_with_its_files_missing_is_refused_for_what_its_family_cannot_do(tmp_path, monkeypatch):
    """IQA-Adapter over sd35 with an empty HF cache: refused when built, before the preflight offers a download."""
    from test_iqa_adapter_generator import tiny_checkpoint

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from iqabench.contracts.needs import collecting

    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    with collecting() as declared:  # as when planning: a missing file is declared to the preflight, not raised
        for preset, label in (("sd35", "Stable Diffusion 3"), ("flux-dev", "FLUX.1-dev"), ("pixart-sigma", "PixArt")):
            assert build_generator(preset, RT).location is None  # its files really are missing
            with pytest.raises(SpecError, match=f"but base '{preset}' is a {label}.*no UNet"):
                build_generator(f"iqa-adapter:{checkpoint}[base={preset}]", RT)
        assert build_generator("flux-schnell", RT).baseline() is None  # no "CFG off" baseline planned either
    assert declared and not any(need.present for need in declared)


def test_tiny_modern_models_fingerprint_their_version_and_tokenizer(monkeypatch):
    """Bumping TINY_MODERN_VERSION changes the tiny modern models' keys (not tiny-sd's, pinned elsewhere)."""
    from iqabench.support import tiny_modern

    def fingerprints() -> dict[str, dict]:
        return {name: build_generator(name, RT).fingerprint() for name in ("tiny-sd3", "tiny-pixart", "tiny-sd")}

    before = fingerprints()
    assert before["tiny-sd3"]["tiny_modern_version"] == tiny_modern.TINY_MODERN_VERSION
    assert len(before["tiny-pixart"]["t5_tokenizer_sha256"]) == 16 and "tiny_modern_version" not in before["tiny-sd"]
    monkeypatch.setattr(tiny_modern, "TINY_MODERN_VERSION", tiny_modern.TINY_MODERN_VERSION + 1)
    after = fingerprints()
    assert after["tiny-sd3"] != before["tiny-sd3"] and after["tiny-pixart"] != before["tiny-pixart"]
    assert after["tiny-sd"] == before["tiny-sd"]


class _Identity:
    """A decoder that returns its latent (config as a VAE's), so the image is x0 / 2 + 0.5 and g is known."""

    class config:  # noqa: N801 - read as ``vae.config.scaling_factor``
        scaling_factor = 1.0
        shift_factor = None

    dtype = torch.float32

    def decode(self, latent):
        return type("Out", (), {"sample": latent})()


class _LinearLogF:
    """log f(image) = <c, image>: g = grad_{x_t} log f = c / 2 through the identity decoder."""

    lower_better = False

    def __init__(self, c):
        self.c, self.seen = c, []

    def raw(self, images):
        self.seen.append(images.detach().clone())
        return torch.exp((self.c * images).sum(dim=(1, 2, 3)))


@pytest.mark.parametrize("scaling", ["paper", "classifier"])
@pytest.mark.parametrize("decode", ["z", "x0"])
def test_flow_matching_guidance_formula_with_a_linear_metric(scaling, decode):
    """v_hat - v = -alpha * omega * g / (1 - s) (times s for classifier scaling); x0_hat = x_t - s v."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from iqabench.adapters.guidance.guide import GuidanceConfig, IQAGuidance

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    gen = torch.Generator().manual_seed(0)
    x_t, v = 0.1 * torch.randn(1, 4, 4, 4, generator=gen), 0.1 * torch.randn(1, 4, 4, 4, generator=gen)
    c = 0.01 * torch.randn(1, 4, 4, 4, generator=gen)
    metric, alpha = _LinearLogF(c), 7.0
    guidance = IQAGuidance(metric, _Identity(), GuidanceConfig(alpha=alpha, decode=decode, scaling=scaling))
    v_hat = guidance.guided_output(scheduler, v, scheduler.timesteps[2], x_t)
    s, w = float(scheduler.sigmas[2]), 2 / 3
    assert guidance.trace[0].sigma == pytest.approx(s) and guidance.trace[0].omega == pytest.approx(w) and 0 < s < 1
    expected = -alpha * w * (c / 2) / (1 - s) * (s if scaling == "classifier" else 1.0)
    torch.testing.assert_close(v_hat - v, expected, rtol=1e-4, atol=1e-7)
    decoded = x_t if decode == "z" else x_t - s * v
    torch.testing.assert_close(metric.seen[0], decoded / 2 + 0.5)


class _Shapes(nn.Module):
    """A differentiable stand-in that records the (height, width) of every image guidance decodes."""

    seen: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _Shapes.seen.append(tuple(x.shape[-2:]))
        return 0.5 + x.mean(dim=(1, 2, 3))


register_metric("test_shapes25", lower_better=False, overwrite=True)(lambda device: _Shapes())


def test_flux_guidance_on_a_non_square_image_unpacks_height_then_width():
    """FLUX's packed latents are unpacked with (height, width) in diffusers' order: a 64 x 32 image is decoded
    64 x 32 for the gradient, never transposed."""
    _Shapes.seen.clear()
    generator = build_generator(f"guidance:test_shapes25[alpha={ALPHA},base=tiny-flux,steps=3,height=64,width=32]", RT)
    image = generator.generate([WorkItem("p0", "a photo of a cat", 0)])[0]
    assert image.size == (32, 64)
    assert _Shapes.seen and set(_Shapes.seen) == {(64, 32)}


def test_training_commands_refuse_a_base_without_unet_before_loading_it(tmp_path, monkeypatch):
    """train iqa-adapter --base tiny-sd3 / train acpo --base sd35 (files missing): the generator's sentence, no
    pipeline loaded (it used to load it and fail on pipe.unet)."""
    from typer.testing import CliRunner

    from iqabench.adapters.diffusers_base import DiffusersGenerator
    from iqabench.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(DiffusersGenerator, "load_pipeline", lambda self: pytest.fail("the base was loaded"))
    (tmp_path / "data").mkdir()
    scores = tmp_path / "scores.parquet"
    pd.DataFrame({"path": ["a.png"], "prompt": ["a cat"], "topiq_nr": [0.5]}).to_parquet(scores)
    adapter = CliRunner().invoke(app, ["train", "iqa-adapter", "--scores", str(scores), "--base", "tiny-sd3",
                                       "--metrics", "topiq_nr", "--out", str(tmp_path / "adapter")])
    acpo = CliRunner().invoke(app, ["train", "acpo", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "lora"),
                                    "--base", "sd35", "--evaluator", "test_bright25"])
    for result, what, base, label in ((adapter, "IQA-Adapter adds decoupled quality keys", "tiny-sd3",
                                       "Stable Diffusion 3"),
                                      (acpo, "ACPO's checkpoints are LoRA weights", "sd35", "Stable Diffusion 3")):
        text = " ".join(result.output.split())
        assert result.exit_code != 0 and what in text and f"but base '{base}' is a {label}" in text, result.output


def test_an_unknown_diffusers_pipeline_without_unet_is_refused_for_unet_methods(tmp_path):
    """diffusers:<Sana-like folder>: its model_index.json names no unet, so ACPO over it is refused up front; a
    folder with a unet stays an SD pipeline."""
    import json

    from iqabench.adapters.acpo.lora import LORA_FILE

    for name, denoiser in (("sana", ["transformer", "SanaTransformer2DModel"]),
                           ("unet", ["unet", "UNet2DConditionModel"])):
        folder = tmp_path / name
        for component in ("vae", denoiser[0]):
            (folder / component).mkdir(parents=True)
            (folder / component / "diffusion_pytorch_model.safetensors").write_bytes(b"")
            (folder / component / "config.json").write_text("{}")  # a complete component (config + weights)
        index = {"_class_name": "SomeNewPipeline", "vae": ["diffusers", "AutoencoderKL"],
                 denoiser[0]: ["diffusers", denoiser[1]]}
        (folder / "model_index.json").write_text(json.dumps(index))
    assert build_generator(f"diffusers:{tmp_path / 'unet'}", RT).pipeline_family.unet
    (tmp_path / "acpo").mkdir()
    (tmp_path / "acpo" / LORA_FILE).write_bytes(b"")
    with pytest.raises(SpecError, match="is a pipeline without a UNet .* nothing to attach it to"):
        build_generator(f"acpo:{tmp_path / 'acpo'}[base=diffusers:{tmp_path / 'sana'}]", RT)
