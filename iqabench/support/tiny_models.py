"""Tiny, seeded, randomly initialised diffusion pipelines for offline tests.

No machine this project is built on can download weights, so every code path
that runs on SDXL also runs here on pipelines of the same *classes* with tiny
configs: an SD-1.5-like :class:`StableDiffusionPipeline` and an SDXL-like
:class:`StableDiffusionXLPipeline` (two text encoders, the second with a
projection, ``addition_embed_type="text_time"`` UNet, Euler scheduler). Only the
sizes differ, so attention-processor swaps, scheduler wrappers and LoRA adapters
see the same module tree they see on the real models.

The tokenizer is the real CLIP BPE tokenizer (49,408 tokens), rebuilt in memory
from the merge list that ``open_clip`` ships (``bpe_simple_vocab_16e6.txt.gz``):
prompts tokenize exactly as they do for SD, and nothing touches the network.

Determinism: every module is built right after ``torch.manual_seed`` of a value
derived from ``seed`` and the module's role, so the same seed gives the same
weights whatever was built before. Built modules are cached per seed; a pipeline
returned with ``fresh=False`` *shares* them with every other such pipeline of
that seed, so code that mutates modules (``set_attn_processor``, ``add_adapter``,
``.to(dtype)``) must ask for ``fresh=True`` (the default).
"""

from __future__ import annotations

import gzip
import importlib.util
import threading
import zlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay lazy at runtime
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

#: Bump when any tiny config changes: generator fingerprints include it, so cached
#: images made by an older tiny model are never reused.
TINY_ZOO_VERSION = 1

#: Default image side of both tiny pipelines (pixels) and default step count.
TINY_IMAGE_SIZE = 64
TINY_STEPS = 4

_CLIP_MERGES = 49152 - 256 - 2  # merges OpenAI's CLIP keeps: vocab = 2*256 bytes + merges + 2 specials
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_lock = threading.Lock()


# -- tokenizer ---------------------------------------------------------------------------------------
def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's id order.

    Printable Latin-1 bytes stand for themselves and come first (ascending); the
    other 68 bytes (controls, space, soft hyphen, ...) follow, mapped in byte
    order to code points from 256 upward. CLIP's ids start with exactly this
    list, so the order matters: ``"a</w>"`` must be id 320 as in SD's tokenizer.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = sorted(set(range(256)) - set(printable))
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary (token -> id) and merge list, rebuilt from open_clip's bundled file.

    Ids follow OpenAI CLIP: 256 byte symbols, the same with ``</w>``, one token per
    merge in rank order, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407).
    """
    spec = importlib.util.find_spec("open_clip")  # locate without importing it (that takes seconds)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("open_clip is not installed; it ships the BPE file the tiny tokenizer needs")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE file is missing at {path}; reinstall open_clip_torch")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _CLIP_MERGES]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [s + "</w>" for s in alphabet] + ["".join(m) for m in merges] + [_BOS, _EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def tiny_clip_tokenizer(pad_token: str = _EOS) -> CLIPTokenizer:
    """A real ``CLIPTokenizer`` built offline; SDXL's second tokenizer pads with ``"!"`` instead of EOS."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)


def clip_vocab_size() -> int:
    return len(clip_vocab_and_merges()[0])


# -- modules -----------------------------------------------------------------------------------------
def _seeded(seed: int, role: str) -> None:
    """Seed torch for one module so its weights do not depend on build order."""
    torch.manual_seed((seed * 1_000_003 + zlib.crc32(role.encode())) % (2**63))


def _text_encoder(seed: int, role: str, *, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=clip_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    _seeded(seed, role)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    return model.eval()


def _vae(seed: int, scaling_factor: float):
    """Three levels -> latents at 1/4 of the image side (SD uses 1/8; 64 px would leave 8x8 latents)."""
    from diffusers import AutoencoderKL

    _seeded(seed, "vae")
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE, scaling_factor=scaling_factor,
    ).eval()


def tiny_autoencoder(seed: int = 0, latent_channels: int = 4):
    """A random-weight ``AutoencoderTiny`` (TAESD's architecture, narrower) for the tiny VAE's latents.

    Same latent channels (16 for the SD3 / FLUX tiny models) and the same 1/4 scale as :func:`_vae`, so
    guidance's ``decoder=tiny`` runs on the tiny pipelines; like every tiny model it only checks mechanics, it
    decodes nothing meaningful.
    """
    from diffusers import AutoencoderTiny

    _seeded(_check_seed(seed), "tiny_autoencoder")
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16), decoder_block_out_channels=(16, 16, 16),
        num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=latent_channels,
    ).eval()


def _sd_unet(seed: int):
    from diffusers import UNet2DConditionModel

    _seeded(seed, "unet")
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=16,
    ).eval()


def _sdxl_unet(seed: int):
    """SDXL layout: no attention at the top level, ``text_time`` added conditioning.

    ``projection_class_embeddings_input_dim`` = pooled text embedding (32, from
    the second encoder's projection) + 6 micro-conditioning numbers (original
    size, crop corner, target size) x ``addition_time_embed_dim`` (8) = 80.
    """
    from diffusers import UNet2DConditionModel

    _seeded(seed, "unet")
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
        attention_head_dim=(4, 8), transformer_layers_per_block=(1, 2), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80, norm_num_groups=16,
    ).eval()


def _sd_components(seed: int) -> dict[str, Any]:
    from diffusers import DDIMScheduler

    return {
        "unet": _sd_unet(seed),
        "vae": _vae(seed, scaling_factor=0.18215),
        "text_encoder": _text_encoder(seed, "text_encoder"),
        "tokenizer": tiny_clip_tokenizer(),
        "scheduler": DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
            set_alpha_to_one=False, steps_offset=1,
        ),
        "safety_checker": None,
        "feature_extractor": None,
    }


def _sdxl_components(seed: int) -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler

    return {
        "unet": _sdxl_unet(seed),
        "vae": _vae(seed, scaling_factor=0.13025),
        "text_encoder": _text_encoder(seed, "text_encoder"),
        "text_encoder_2": _text_encoder(seed, "text_encoder_2", with_projection=True),
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_clip_tokenizer(pad_token="!"),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            timestep_spacing="leading",
        ),
    }


@lru_cache(maxsize=8)
def _cached_sd(seed: int) -> dict[str, Any]:
    return _sd_components(seed)


@lru_cache(maxsize=8)
def _cached_sdxl(seed: int) -> dict[str, Any]:
    return _sdxl_components(seed)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"tiny model seed must be a non-negative integer, got {seed!r}")
    return seed


def _finish(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd_pipeline(seed: int = 0, *, fresh: bool = True) -> StableDiffusionPipeline:
    """An SD-1.5-like ``StableDiffusionPipeline`` with random weights (64 px, DDIM, no safety checker).

    ``fresh=True`` builds new modules (about a second on one CPU core), safe to
    mutate. ``fresh=False`` reuses this process's cached modules of that seed:
    faster, but any in-place change is seen by every other such pipeline.
    """
    from diffusers import StableDiffusionPipeline

    seed = _check_seed(seed)
    with _lock:
        components = _sd_components(seed) if fresh else _cached_sd(seed)
    return _finish(StableDiffusionPipeline(**components, requires_safety_checker=False))


def tiny_sdxl_pipeline(seed: int = 0, *, fresh: bool = True) -> StableDiffusionXLPipeline:
    """An SDXL-like ``StableDiffusionXLPipeline`` with random weights (64 px, Euler, two text encoders).

    ``fresh`` as in :func:`tiny_sd_pipeline`.
    """
    from diffusers import StableDiffusionXLPipeline

    seed = _check_seed(seed)
    with _lock:
        components = _sdxl_components(seed) if fresh else _cached_sdxl(seed)
    return _finish(StableDiffusionXLPipeline(**components))


def tiny_cross_attention_unet(seed: int = 0, cross_attention_dim: int = 32):
    """A bare random UNet with cross-attention at 8x8 latents, for processor and checkpoint tests.

    Smaller than the pipelines' UNets and with a settable cross-attention width,
    so a test can build one of the "wrong" width for a mismatch check.
    """
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    ).eval()
