"""Hugging Face hub cache snapshots with random weights, in the layout ``hf download`` writes.

Layout (huggingface_hub's cache, one folder per repository)::

    $HF_HUB_CACHE/models--<org>--<name>/
        refs/main                         the commit hash, no newline
        blobs/<sha256>                    file contents, named by hash
        snapshots/<commit>/<relpath>      relative symlinks into blobs/ (copies where links fail)

Pipelines are the real *classes* with scaled-down configs under the real hub
ids: diffusers does not check a config against the hub id, so a tiny
``StableDiffusionXLPipeline`` saved under ``stabilityai/stable-diffusion-xl-base-1.0``
exercises exactly the loading code the real one does (model_index.json,
component folders, ``*.safetensors`` and ``*.fp16.safetensors`` variant files,
the SD 1.x safety checker that iqabench declines to load). open_clip models go
through ``hf_hub_download`` and a strict ``load_state_dict`` against open_clip's
bundled config, so those are written at their *real* architecture.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

#: Hub ids of the presets (see iqabench's diffusers base generators), and the pipeline each gets.
SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"
SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD21_ID = "stabilityai/stable-diffusion-2-1"
SD14_ID = "CompVis/stable-diffusion-v1-4"
#: The one repository written with an extra fp16 ``variant`` set, as the real SDXL repository has.
FP16_VARIANT_ID = SDXL_ID

#: open_clip's ``ViT-L-14`` / ``openai`` tag resolves to this hub repository (open_clip.pretrained: hf_hub
#: "timm/vit_large_patch14_clip_224.openai/"), and hf_hub_download prefers the safetensors file.
OPEN_CLIP_VITL14_OPENAI = "timm/vit_large_patch14_clip_224.openai"
OPEN_CLIP_FILE = "open_clip_model.safetensors"
#: The open_clip models iqabench loads with pretrained weights: CLIP-T/I and GenEval colours (ViT-L-14), the
#: ACPO IPCE evaluator (ViT-B-32, as the official IPCE code's clip.load("ViT-B/32")).
OPEN_CLIP_MODELS = (("ViT-L-14", "openai"), ("ViT-B-32", "openai"))


def repo_folder(cache: Path, repo_id: str) -> Path:
    """``models--org--name`` as huggingface_hub names a model repository's cache folder."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def commit_for(repo_id: str) -> str:
    """A stable 40-hex commit per repository (the mirror's stand-in for the hub's git sha)."""
    return hashlib.sha1(f"iqabench-hub-mirror:{repo_id}".encode()).hexdigest()


def _link_or_copy(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.symlink(os.path.relpath(blob, target.parent), target)
    except OSError:  # e.g. Windows without developer mode: huggingface_hub copies too
        shutil.copyfile(blob, target)


def write_snapshot(cache: Path, repo_id: str, files: Mapping[str, Path]) -> Path:
    """Put ``files`` (snapshot-relative name -> local file) into the cache as one commit on ``main``.

    Returns the snapshot folder. Blobs are named by the sha256 of their bytes,
    as the hub names LFS files.
    """
    folder = repo_folder(cache, repo_id)
    commit = commit_for(repo_id)
    snapshot = folder / "snapshots" / commit
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, source in sorted(files.items()):
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        blob = blobs / digest.hexdigest()
        if not blob.exists():
            shutil.copyfile(source, blob)
        _link_or_copy(blob, snapshot / name)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit, encoding="utf-8")
    return snapshot


def _files_under(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def write_saved_pretrained(cache: Path, repo_id: str, save: Callable[[Path], Any]) -> Path:
    """Run ``save(folder)`` (a ``save_pretrained``) into a scratch folder and import what it wrote."""
    with tempfile.TemporaryDirectory(prefix="hub-mirror-") as scratch:
        save(Path(scratch))
        return write_snapshot(cache, repo_id, _files_under(Path(scratch)))


# -- diffusers pipelines ------------------------------------------------------------------------------
def _tiny_safety_checker(seed: int):
    """SD 1.x ships a safety checker (a CLIP vision tower); iqabench must decline to load it."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=16,
    )
    return StableDiffusionSafetyChecker(config).eval()


def sd1_pipeline(seed: int, *, safety_checker: bool = True):
    """SD 1.4 / 1.5: ``StableDiffusionPipeline``, PNDM scheduler (as on the hub), CLIP feature extractor."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    from iqabench.support import tiny_models

    comps = tiny_models._sd_components(seed)
    comps["scheduler"] = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    comps["feature_extractor"] = CLIPImageProcessor(crop_size=224, size=224)
    comps["safety_checker"] = _tiny_safety_checker(seed) if safety_checker else None
    return StableDiffusionPipeline(**comps, requires_safety_checker=safety_checker)


def sd21_pipeline(seed: int):
    """SD 2.1: v-prediction DDIM, no safety checker in model_index (``[null, null]``), ``!`` padding."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from iqabench.support import tiny_models

    comps = tiny_models._sd_components(seed)
    comps["scheduler"] = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                       prediction_type="v_prediction")
    comps["tokenizer"] = tiny_models.tiny_clip_tokenizer(pad_token="!")
    return StableDiffusionPipeline(**comps, requires_safety_checker=False)


def sdxl_pipeline(seed: int):
    """SDXL base: two text encoders, ``text_time`` UNet, Euler; the VAE asks to be upcast in fp16 as the real one."""
    from diffusers import StableDiffusionXLPipeline

    from iqabench.support import tiny_models

    comps = tiny_models._sdxl_components(seed)
    comps["vae"].register_to_config(force_upcast=True)
    return StableDiffusionXLPipeline(**comps)


#: Hub id -> builder of its scaled-down pipeline (random weights, seeded).
PIPELINES: dict[str, Callable[[int], Any]] = {
    SDXL_ID: sdxl_pipeline,
    SD15_ID: sd1_pipeline,
    SD14_ID: sd1_pipeline,
    SD21_ID: sd21_pipeline,
}


def save_pipeline(pipe: Any, folder: Path, *, fp16_variant: bool = False) -> None:
    """``save_pretrained`` as the hub repositories hold it: fp32 safetensors, plus ``*.fp16.*`` files if asked."""
    pipe.save_pretrained(folder, safe_serialization=True)
    if fp16_variant:
        pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
        pipe.to(torch.float32)


def write_pipelines(cache: Path, repo_ids: Iterable[str] = tuple(PIPELINES), seed: int = 0) -> dict[str, Path]:
    """Snapshots of every preset's pipeline (SDXL with its fp16 variant too); repo id -> snapshot folder."""
    written = {}
    for repo_id in repo_ids:
        pipe = PIPELINES[repo_id](seed)
        fp16 = repo_id == FP16_VARIANT_ID
        written[repo_id] = write_saved_pretrained(cache, repo_id, lambda d, p=pipe, f=fp16: save_pipeline(p, d,
                                                                                                          fp16_variant=f))
    return written


def save_pipeline_folder(repo_id: str, folder: Path, seed: int = 0, *, fp16_variant: bool = False) -> Path:
    """A ``save_pretrained`` folder of a preset's pipeline (what ``hf download --local-dir`` gives)."""
    save_pipeline(PIPELINES[repo_id](seed), folder, fp16_variant=fp16_variant)
    return folder


# -- open_clip -----------------------------------------------------------------------------------------
def _random_like(name: str, shape: torch.Size, pool: torch.Tensor) -> torch.Tensor:
    """Cheap random fill: LayerNorm scales 1, biases 0, the logit scale log(100), else slices of a random pool."""
    if name == "logit_scale":
        return torch.full(shape, 4.6052, dtype=pool.dtype)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return torch.zeros(shape, dtype=pool.dtype)
    if leaf == "weight" and (".ln_" in f".{name}" or name.startswith("ln_")):
        return torch.ones(shape, dtype=pool.dtype)
    count = shape.numel()
    repeats = -(-count // pool.numel())
    return pool.repeat(repeats)[:count].view(shape).clone()


def write_open_clip(cache: Path, arch: str = "ViT-L-14", tag: str = "openai", seed: int = 0,
                    dtype: torch.dtype = torch.float16) -> Path:
    """open_clip's pretrained file for ``arch``/``tag`` at its real architecture (open_clip loads strictly).

    The repository is the one open_clip's pretrained table names for the tag
    (``ViT-L-14``/``openai`` -> ``timm/vit_large_patch14_clip_224.openai``) and
    the file the safetensors one ``hf_hub_download`` tries first. Stored in fp16
    (as OpenAI's release is) to halve the file; open_clip copies it into its
    fp32 parameters. The model is built on the meta device (shapes and names
    only) and filled from a small random pool: 0.4 B parameters in a second.
    """
    import open_clip
    from safetensors.torch import save_file

    repo_id = open_clip.get_pretrained_cfg(arch, tag)["hf_hub"].rstrip("/")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in open_clip.create_model(arch, pretrained=None, device="meta")
                  .state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(1 << 20, generator=generator) * 0.02).to(dtype)
    state = {name: _random_like(name, shape, pool) for name, shape in shapes.items()}
    with tempfile.TemporaryDirectory(prefix="hub-mirror-") as scratch:
        path = Path(scratch) / OPEN_CLIP_FILE
        save_file(state, str(path))
        del state
        return write_snapshot(cache, repo_id, {OPEN_CLIP_FILE: path})


# -- tiny decoders (guidance decoder=tiny) ------------------------------------------------------------------
#: The distilled decoders guidance's ``decoder=tiny`` reads (adapters/guidance/tiny_decoder.py).
TINY_DECODER_IDS = ("madebyollin/taesdxl", "madebyollin/taesd", "madebyollin/taesd3", "madebyollin/taef1")
#: the released configs of the 16-channel decoders (SD3, FLUX.1): latent channels, scaling and shift
_TINY_DECODER_CONFIGS = {
    "madebyollin/taesd3": {"latent_channels": 16, "scaling_factor": 1.5305, "shift_factor": 0.0609},
    "madebyollin/taef1": {"latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159},
}


def write_tiny_decoders(cache: Path, seed: int = 0, *, pickle_marker: Path | None = None) -> dict[str, Path]:
    """TAESD / TAESDXL snapshots at their real architecture (``AutoencoderTiny()``'s defaults are the released
    config; 2.4 M parameters each) with random weights, as ``config.json`` + ``diffusion_pytorch_model.safetensors``.

    The real repositories also hold a pickled ``diffusion_pytorch_model.bin``; here that file is a planted
    checkpoint (:mod:`.planted`) that creates ``pickle_marker`` if anything ever unpickles it (iqabench reads
    safetensors only).
    """
    from diffusers import AutoencoderTiny

    from .planted import plant

    written = {}
    for index, repo_id in enumerate(TINY_DECODER_IDS):
        torch.manual_seed(seed * 1009 + index)
        model = AutoencoderTiny(**_TINY_DECODER_CONFIGS.get(repo_id, {}))

        def save(folder: Path, model=model) -> None:
            model.save_pretrained(folder, safe_serialization=True)
            if pickle_marker is not None:
                plant(folder / "diffusion_pytorch_model.bin", pickle_marker)

        written[repo_id] = write_saved_pretrained(cache, repo_id, save)
    return written


def write_hf_cache(cache: Path, *, clip: bool = True, seed: int = 0) -> dict[str, Path]:
    """Every hub repository iqabench's generators and benchmarks read; repo id -> snapshot folder."""
    written = write_pipelines(cache, seed=seed)
    if clip:
        for arch, tag in OPEN_CLIP_MODELS:
            written[f"{arch}/{tag}"] = write_open_clip(cache, arch, tag, seed=seed)
    return written
