"""The offline tiny model zoo: real CLIP tokenization, seeded weights, right-size images, isolation."""

import numpy as np
import pytest
import torch

from iqabench.support import tiny_models
from iqabench.support.tiny_models import tiny_clip_tokenizer, tiny_sd_pipeline, tiny_sdxl_pipeline

BUILDERS = [tiny_sd_pipeline, tiny_sdxl_pipeline]



def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tokenizer_gives_openai_clip_ids_offline():
    tok = tiny_clip_tokenizer()
    # Ids of OpenAI CLIP's vocabulary (as in SD's tokenizer): a=320, photo=1125, of=539, cat=2368, ','=267.
    assert tok("a photo of a cat, highly").input_ids[:7] == [49406, 320, 1125, 539, 320, 2368, 267]
    assert tok("a photo").input_ids[-1] == 49407
    padded = tok("a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(padded) == 77 and padded[-1] == 49407
    assert tiny_clip_tokenizer(pad_token="!")("a", padding="max_length", max_length=5).input_ids == [
        49406, 320, 49407, 0, 0]


@pytest.mark.parametrize("builder", BUILDERS)
def test_text_encoder_vocab_matches_tokenizer(builder):
    pipe = builder(0, fresh=False)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else [])
    for encoder in encoders:
        assert encoder.config.vocab_size == len(pipe.tokenizer) == tiny_models.clip_vocab_size() == 49408


@pytest.mark.parametrize("builder", BUILDERS)
def test_same_seed_same_weights_other_seed_other_weights(builder):
    a, b, c = builder(3), builder(3), builder(4)
    for name in ("unet", "vae", "text_encoder"):
        assert _same_weights(getattr(a, name), getattr(b, name)), name
        assert not _same_weights(getattr(a, name), getattr(c, name)), name
    assert a.unet is not b.unet  # fresh=True builds new modules


def test_weights_do_not_depend_on_build_order():
    first = tiny_sdxl_pipeline(5)
    tiny_sd_pipeline(6)  # consumes the global RNG in between
    torch.rand(100)
    again = tiny_sdxl_pipeline(5)
    assert _same_weights(first.unet, again.unet) and _same_weights(first.text_encoder_2, again.text_encoder_2)


def test_fresh_false_shares_modules_and_fresh_true_isolates_mutation():
    shared_a, shared_b = tiny_sd_pipeline(0, fresh=False), tiny_sd_pipeline(0, fresh=False)
    assert shared_a is not shared_b and shared_a.unet is shared_b.unet
    fresh = tiny_sd_pipeline(0)
    before = _state(shared_a.unet)
    with torch.no_grad():
        next(fresh.unet.parameters()).add_(1.0)
    after = shared_a.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sd_is_sd15_like():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = tiny_sd_pipeline(0, fresh=False)
    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == tiny_models.TINY_IMAGE_SIZE
    assert any(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)


def test_sdxl_is_sdxl_like():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    pipe = tiny_sdxl_pipeline(0, fresh=False)
    assert isinstance(pipe, StableDiffusionXLPipeline) and isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert pipe.unet.config.addition_embed_type == "text_time"
    hidden = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == hidden
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == tiny_models.TINY_IMAGE_SIZE


@pytest.mark.parametrize("builder", BUILDERS)
def test_generates_64px_rgb_images_that_depend_on_the_seed(builder):
    pipe = builder(0, fresh=False)

    def make(seed: int) -> np.ndarray:
        out = pipe(["a photo of a cat"], num_inference_steps=tiny_models.TINY_STEPS,
                   generator=[torch.Generator().manual_seed(seed)], output_type="pil")
        image = out.images[0]
        assert image.size == (64, 64) and image.mode == "RGB"
        return np.asarray(image)

    first, again, other = make(1), make(1), make(2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.std() > 1.0  # not a flat image


def test_piqe_scores_a_64px_tiny_image():
    import pyiqa

    pipe = tiny_sd_pipeline(0, fresh=False)
    out = pipe(["a red car"], num_inference_steps=2, generator=[torch.Generator().manual_seed(0)],
               output_type="np")
    images = torch.from_numpy(out.images).permute(0, 3, 1, 2)
    score = pyiqa.create_metric("piqe", device="cpu")(images)
    assert score.shape == (1,) and torch.isfinite(score).all() and 0 <= float(score) <= 100


def test_bad_seed_is_one_clear_error():
    with pytest.raises(ValueError, match="non-negative integer"):
        tiny_sd_pipeline(-1)
