"""Tiny random SD3 / FLUX.1 / PixArt-Sigma pipelines for offline tests (issue 25), beside :mod:`.tiny_models`.

Same rules as the SD / SDXL tiny models: the real pipeline *classes* (``StableDiffusion3Pipeline``,
``FluxPipeline``, ``PixArtSigmaPipeline``) with configs scaled down from diffusers' own pipeline tests, every
module seeded by its role, nothing from the network. What matters to iqabench is kept as in the real models:

* **SD3 (3.5 medium layout)**: three text encoders (two CLIP with projection, one T5), a joint-attention
  ``SD3Transformer2DModel`` (no UNet, no cross-attention), a 16-channel VAE with ``shift_factor``,
  ``FlowMatchEulerDiscreteScheduler`` (shift 3.0).
* **FLUX.1**: CLIP + T5, ``FluxTransformer2DModel`` on *packed* 2x2 latents (in_channels = 4 x 16), a
  16-channel VAE with ``shift_factor``; the dev-like model has ``guidance_embeds=True`` (guidance is an input
  of the transformer, not CFG), the schnell-like one has none (guidance_scale has no effect at all).
* **PixArt-Sigma**: one T5, ``PixArtTransformer2DModel`` with learned sigma (8 output channels) and
  cross-attention in a transformer (no UNet), a 4-channel VAE, DDIM. ``sample_size=32`` is one of the sizes
  whose resolution bins diffusers knows (256 px bins), so ``use_resolution_binning`` works on it.

The T5 tokenizer is a real ``T5TokenizerFast`` over a small sentencepiece unigram model trained here, offline
and deterministically, on the words of CLIP's BPE vocabulary (1,000 pieces, T5's special ids: pad 0, eos 1,
unk 2). CLIP tokenizers are :func:`iqabench.support.tiny_models.tiny_clip_tokenizer`.

All three sample at 64 px by default with latents at 1/4 of the side (three VAE levels), as the SD tiny models.
"""

from __future__ import annotations

import hashlib
import io
import threading
from functools import lru_cache
from typing import Any

from .tiny_models import TINY_IMAGE_SIZE, _check_seed, _finish, _seeded, clip_vocab_and_merges, tiny_clip_tokenizer

#: Bump when a config below changes (part of these models' fingerprints, :func:`fingerprint`).
TINY_MODERN_VERSION = 1
T5_VOCAB = 1000
T5_MAX_LENGTH = 32  # tiny max_sequence_length default of the tiny presets (the real models take 256 / 512 / 300)
LATENT_CHANNELS_FLOW = 16  # SD3 and FLUX VAEs (TAESD3 / TAEF1 decode 16-channel latents)
_lock = threading.Lock()


# -- tokenizers --------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def t5_sentencepiece_model() -> bytes:
    """A small sentencepiece unigram model (bytes of ``spiece.model``), trained offline on CLIP's vocabulary words.

    Deterministic: one thread, no input shuffling, a fixed corpus; T5's ids for pad (0), eos (1) and unk (2).
    """
    import sentencepiece as spm

    vocab, _ = clip_vocab_and_merges()
    words = sorted({t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha()})
    words = words[:: max(1, len(words) // 4000)]  # ~4,000 words: enough for 1,000 pieces, trained in < 1 s
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=T5_VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, character_coverage=1.0, minloglevel=2,
    )
    return model.getvalue()


def tiny_t5_tokenizer():
    """A real ``T5TokenizerFast`` (no extra ids) over :func:`t5_sentencepiece_model`'s pieces and scores."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    model = spm.SentencePieceProcessor(model_proto=t5_sentencepiece_model())
    vocab = [(model.id_to_piece(i), model.get_score(i)) for i in range(model.get_piece_size())]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


# -- modules ------------------------------------------------------------------------------------------------
def _t5_encoder(seed: int, role: str, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=T5_VOCAB, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    _seeded(seed, role)
    return T5EncoderModel(config).eval()


def _clip_encoder(seed: int, role: str, *, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(clip_vocab_and_merges()[0]), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    _seeded(seed, role)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _flow_vae(seed: int, *, scaling_factor: float, shift_factor: float):
    """16 latent channels and a shift, as the SD3 / FLUX VAEs; three levels (1/4 of the side)."""
    from diffusers import AutoencoderKL

    _seeded(seed, "vae")
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS_FLOW,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=TINY_IMAGE_SIZE,
        scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def _sd3_components(seed: int) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    _seeded(seed, "transformer")
    transformer = SD3Transformer2DModel(
        sample_size=TINY_IMAGE_SIZE // 4, patch_size=2, in_channels=LATENT_CHANNELS_FLOW, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
        pooled_projection_dim=64, out_channels=LATENT_CHANNELS_FLOW, pos_embed_max_size=32,
    ).eval()
    return {
        "transformer": transformer,
        "vae": _flow_vae(seed, scaling_factor=1.5305, shift_factor=0.0609),
        "text_encoder": _clip_encoder(seed, "text_encoder", with_projection=True),
        "text_encoder_2": _clip_encoder(seed, "text_encoder_2", with_projection=True),
        "text_encoder_3": _t5_encoder(seed, "text_encoder_3"),
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_clip_tokenizer(),
        "tokenizer_3": tiny_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def _flux_components(seed: int, *, guidance_embeds: bool) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    _seeded(seed, "transformer")
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS_FLOW, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8),
    ).eval()
    # FLUX.1's scheduler: dynamic shifting by image size (base_shift 0.5, max_shift 1.15), as the real repos
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    return {
        "transformer": transformer,
        "vae": _flow_vae(seed, scaling_factor=0.3611, shift_factor=0.1159),
        "text_encoder": _clip_encoder(seed, "text_encoder", with_projection=False),
        "text_encoder_2": _t5_encoder(seed, "text_encoder_2"),
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_t5_tokenizer(),
        "scheduler": scheduler,
    }


def _pixart_components(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler, PixArtTransformer2DModel

    _seeded(seed, "transformer")
    transformer = PixArtTransformer2DModel(
        sample_size=PIXART_SAMPLE_SIZE, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
    ).eval()
    _seeded(seed, "vae")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
        norm_num_groups=8, sample_size=TINY_IMAGE_SIZE, scaling_factor=0.13025,
    ).eval()
    return {"transformer": transformer, "vae": vae, "text_encoder": _t5_encoder(seed, "text_encoder"),
            "tokenizer": tiny_t5_tokenizer(), "scheduler": DDIMScheduler()}


# -- pipelines ----------------------------------------------------------------------------------------------
def tiny_sd3_pipeline(seed: int = 0, *, fresh: bool = True):
    """An SD3.5-medium-like ``StableDiffusion3Pipeline`` with random weights (64 px, flow matching, 3 encoders).

    ``fresh`` is accepted for symmetry with :func:`iqabench.support.tiny_models.tiny_sd_pipeline`; modules are always
    new.
    """
    from diffusers import StableDiffusion3Pipeline

    with _lock:
        components = _sd3_components(_check_seed(seed))
    return _finish(StableDiffusion3Pipeline(**components))


def tiny_flux_pipeline(seed: int = 0, *, fresh: bool = True):
    """A FLUX.1-dev-like ``FluxPipeline`` (guidance embedding: guidance_scale is an input, no CFG)."""
    from diffusers import FluxPipeline

    with _lock:
        components = _flux_components(_check_seed(seed), guidance_embeds=True)
    return _finish(FluxPipeline(**components))


def tiny_flux_schnell_pipeline(seed: int = 0, *, fresh: bool = True):
    """A FLUX.1-schnell-like ``FluxPipeline`` (no guidance embedding: guidance_scale has no effect)."""
    from diffusers import FluxPipeline

    with _lock:
        components = _flux_components(_check_seed(seed), guidance_embeds=False)
    return _finish(FluxPipeline(**components))


def tiny_pixart_pipeline(seed: int = 0, *, fresh: bool = True):
    """A PixArt-Sigma-like ``PixArtSigmaPipeline`` (T5 only, transformer with cross-attention, DDIM)."""
    from diffusers import PixArtSigmaPipeline

    with _lock:
        components = _pixart_components(_check_seed(seed))
    return _finish(PixArtSigmaPipeline(**components))


def fingerprint() -> dict[str, Any]:
    """What the tiny modern models' images depend on beyond their spec: the configs' version and the digest of the
    T5 tokenizer trained here (another sentencepiece release may train other pieces, so other prompt ids).

    Read by ``DiffusersGenerator.fingerprint`` for these builders only; the SD / SDXL tiny keys stay pinned.
    Training the tokenizer takes ~0.5 s once per process (it is cached, and building the pipeline needs it).
    """
    return {"tiny_modern_version": TINY_MODERN_VERSION,
            "t5_tokenizer_sha256": hashlib.sha256(t5_sentencepiece_model()).hexdigest()[:16]}


#: builder -> the pipeline class name it builds (the family table in adapters/families.py reads it)
PIPELINE_CLASS = {
    tiny_sd3_pipeline: "StableDiffusion3Pipeline",
    tiny_flux_pipeline: "FluxPipeline",
    tiny_flux_schnell_pipeline: "FluxPipeline",
    tiny_pixart_pipeline: "PixArtSigmaPipeline",
}

#: transformer sample_size of the tiny PixArt (diffusers' 256-px resolution bins)
PIXART_SAMPLE_SIZE = 32
