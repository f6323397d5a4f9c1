"""A cheaper decode path for the guidance gradient: a tiny distilled decoder (TAESD) instead of the VAE's.

**Why.** Every guided step runs the VAE decoder forward *and* backward at full
resolution; at 1024 px that is most of the guidance cost (about x5 the unguided
time on an H200, issue 18). TAESD / TAESDXL (madebyollin, loaded by diffusers as
``AutoencoderTiny``) were distilled to reproduce the SD / SDXL VAE's decode from the
same latents at a small fraction of its compute and activation memory. With
``decoder=tiny`` the gradient ``grad_{z_t} log f(D(z_t))`` is taken through the tiny
decoder; the pipeline's own final decode (the image that is saved and scored) is
still the full VAE's.

**Not the paper's setting.** The paper decodes with the model's VAE, which stays
the default (``decoder=vae``). A tiny decoder changes the guidance gradient, so it
changes the images: it gets its own cache keys, and how close its images are to
the paper's is measured, not assumed (``perf/guidance.py`` prints the largest pixel
difference and how much of the guidance effect is kept). That closeness is a
property of the real distilled weights; with random weights (the offline tests and
the GPU kit) only the mechanics and the cost can be checked.

**Weights.** The matching decoder is chosen by the base pipeline: TAESDXL for SDXL
pipelines, TAESD for SD 1.x / 2.x. ``tiny_decoder=<hub id or folder>`` overrides
it. Files are read only from the Hugging Face cache or a local folder and only as
``.safetensors`` (a ``.bin`` is a pickle and is refused). The tiny test pipelines
get a seeded random tiny decoder of matching shape (``iqabench.support.tiny_models``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqabench.contracts.generators import WeightsMissingError
from iqabench.contracts.needs import Need, declare
from iqabench.contracts.specs import SpecError

from ..hub_cache import HUB_ID, hub_cache_dir

#: The distilled decoders of the latent spaces iqabench's presets use (diffusers-format hub repos).
TINY_DECODER_SDXL = "madebyollin/taesdxl"
TINY_DECODER_SD = "madebyollin/taesd"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


#: the SD 1.x/2.x VAE's scaling factor (TAESD's latent space); the SDXL VAE's is 0.13025
SD_VAE_SCALING = 0.18215


def default_tiny_decoder(pipeline_class: str, vae_scaling_factor: float | None = None) -> str:
    """TAESDXL for an SDXL pipeline, TAESD for SD 1.x / 2.x, TAESD3 for SD3, TAEF1 for FLUX.1; PixArt by its
    VAE's ``scaling_factor``: TAESDXL for PixArt-Sigma (the SDXL VAE), TAESD for PixArt-alpha (the SD 1.x VAE,
    0.18215). The latent space decides, not the image size."""
    from ..families import PIXART, family_of

    family = family_of(pipeline_class)
    if family is PIXART and vae_scaling_factor is not None and math.isclose(vae_scaling_factor, SD_VAE_SCALING,
                                                                            rel_tol=1e-3):
        return TINY_DECODER_SD
    if family.tiny_decoder is not None:
        return family.tiny_decoder
    return TINY_DECODER_SDXL if "XL" in pipeline_class else TINY_DECODER_SD


@dataclass(frozen=True)
class TinyDecoderFiles:
    """Where a tiny decoder's ``config.json`` and safetensors weights were found, and what identifies them."""

    source: str
    folder: Path
    revision: str  # the hub commit, or a signature of a local folder's files

    def fingerprint(self) -> dict[str, str]:
        return {"tiny_decoder": self.source, "tiny_decoder_revision": self.revision}

    def config(self) -> dict[str, Any]:
        """Its ``config.json`` (read as JSON, nothing loaded)."""
        return _read_json(self.folder / "config.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsMissingError(f"{path} is not readable JSON ({exc})") from exc


def vae_latent_channels(pipeline_folder: Path) -> int | None:
    """The base pipeline's VAE latent channels from ``vae/config.json``, or None where it has no such file."""
    config = pipeline_folder / "vae" / "config.json"
    return int(_read_json(config).get("latent_channels", 4)) if config.is_file() else None


def vae_scaling_factor(pipeline_folder: Path) -> float | None:
    """The base pipeline's VAE ``scaling_factor`` from ``vae/config.json``, or None where it has none."""
    config = pipeline_folder / "vae" / "config.json"
    value = _read_json(config).get("scaling_factor") if config.is_file() else None
    return None if value is None else float(value)


def tiny_decoder_needs(source: str, where: str) -> list[Need]:
    """The two hub files a tiny decoder is loaded from (``config.json`` and the safetensors weights, never the
    pickled ``.bin`` beside them), as needs: what the preflight names and ``iqabench fetch`` downloads."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    message = (f"{where}: the tiny decoder {source} is not in the Hugging Face cache at {cache} (nothing is "
               f"downloaded here): run `iqabench fetch` with the same arguments (or `hf download {source} config.json "
               f"{WEIGHTS_FILE}`) on a connected machine and copy the cache over, pass tiny_decoder=<folder>, or use "
               "decoder=vae")
    needs = []
    for name in ("config.json", WEIGHTS_FILE):
        found = try_to_load_from_cache(source, name, cache_dir=cache)
        if isinstance(found, str):
            needs.append(Need(f"tiny decoder {source}", Path(found), "hub-file", source, True,
                              size=Path(found).stat().st_size, filename=name))
        else:
            folder = cache / f"models--{source.replace('/', '--')}"
            needs.append(Need(f"tiny decoder {source}", folder / name, "hub-file", source, False, filename=name,
                              message=message))
    return needs


def find_tiny_decoder(source: str, where: str) -> TinyDecoderFiles | None:
    """Locate the files offline (nothing is loaded or downloaded); one sentence when they are missing.

    A hub decoder's files are declared as needs; while the preflight collects them, a missing one gives None.
    """
    local = Path(source).expanduser()
    if local.is_dir():
        folder, revision = local.resolve(), ""
    elif HUB_ID.match(source):
        needs = tiny_decoder_needs(source, where)
        present = [declare(need) for need in needs]  # outside collecting(), a missing one raises its sentence
        if not all(present):
            return None
        folder = needs[0].destination.parent
        revision = folder.name
    else:
        raise SpecError(f"{where}: tiny_decoder={source!r} is neither a folder nor a hub id like "
                        f"{TINY_DECODER_SDXL}")
    if not (folder / "config.json").is_file():
        raise WeightsMissingError(f"{where}: no config.json in the tiny decoder folder {folder}")
    if not (folder / WEIGHTS_FILE).is_file():
        pickled = (folder / "diffusion_pytorch_model.bin").is_file()
        raise WeightsMissingError(
            f"{where}: the tiny decoder at {folder} has no {WEIGHTS_FILE}"
            + (" (its .bin is a pickle, which iqabench never loads; convert it to .safetensors)" if pickled else ""))
    return TinyDecoderFiles(source, folder, revision or content_signature(folder))


def content_signature(folder: Path) -> str:
    """SHA-256 of a local decoder's config and weights: a decoder re-distilled in place (same file sizes, other
    weights) gets a new cache key, which a names-and-sizes signature would not give (~10 MB to read)."""
    digest = hashlib.sha256()
    for name in ("config.json", WEIGHTS_FILE):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_tiny_decoder(files: TinyDecoderFiles, latent_channels: int, where: str) -> Any:
    """``AutoencoderTiny`` from the located files (safetensors only), checked against the base's latent space."""
    from diffusers import AutoencoderTiny

    decoder = AutoencoderTiny.from_pretrained(str(files.folder), use_safetensors=True, local_files_only=True)
    check_latent_channels(decoder.config, latent_channels, where, files.source)
    return decoder.eval().requires_grad_(False)


def check_latent_channels(config: Any, latent_channels: int, where: str, source: str) -> None:
    """A decoder for another latent space (e.g. SD3's 16 channels) would decode noise: refuse it."""
    own = int(config["latent_channels"] if isinstance(config, dict) else config.latent_channels)
    if own != latent_channels:
        raise SpecError(f"{where}: the tiny decoder {source} decodes {own}-channel latents but the base model's "
                        f"VAE makes {latent_channels}-channel ones; give a matching tiny_decoder= or use decoder=vae")
