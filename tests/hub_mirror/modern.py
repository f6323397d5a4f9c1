"""Hub snapshots of SD3.5 medium, FLUX.1-dev, FLUX.1-schnell and PixArt-Sigma with random weights (issue 25).

The pipelines are :mod:`iqabench.support.tiny_modern`'s (the real classes, scaled down), saved under the real hub ids
in the real repositories' file layout: the component folders of ``model_index.json``; T5 encoders (and FLUX's
transformer) sharded as the real repositories shard them (``model-00001-of-00002.safetensors`` +
``model.safetensors.index.json``, ``diffusion_pytorch_model-00001-of-00003.safetensors`` + index); T5
tokenizer folders with ``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json`` and
``special_tokens_map.json``; PixArt-Sigma's DPM-Solver scheduler. The repositories' single-file originals
(``flux1-dev.safetensors``, ``ae.safetensors``, ``sd3.5_medium.safetensors``) are not written: diffusers never
reads them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .hf_cache import write_saved_pretrained

SD35_ID = "stabilityai/stable-diffusion-3.5-medium"
FLUX_DEV_ID = "black-forest-labs/FLUX.1-dev"
FLUX_SCHNELL_ID = "black-forest-labs/FLUX.1-schnell"
PIXART_SIGMA_ID = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"

#: repo id -> (tiny builder name, {component folder: number of weight shards in the real repository}, T5 folders)
MODERN: dict[str, tuple[str, dict[str, int], tuple[str, ...]]] = {
    SD35_ID: ("tiny_sd3_pipeline", {"text_encoder_3": 2}, ("tokenizer_3",)),
    FLUX_DEV_ID: ("tiny_flux_pipeline", {"text_encoder_2": 2, "transformer": 3}, ("tokenizer_2",)),
    FLUX_SCHNELL_ID: ("tiny_flux_schnell_pipeline", {"text_encoder_2": 2, "transformer": 3}, ("tokenizer_2",)),
    PIXART_SIGMA_ID: ("tiny_pixart_pipeline", {"text_encoder": 2}, ("tokenizer",)),
}


def _save_sharded(model: Any, folder: Path, shards: int) -> None:
    """``save_pretrained`` into ``folder`` with exactly ``shards`` weight files (the real repository's count)."""
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    size = total // shards + 1
    for _ in range(40):
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True, max_shard_size=size)
        count = len([p for p in folder.iterdir() if p.suffix == ".safetensors"])
        if count == shards:
            return
        size = int(size * (1.05 if count > shards else 0.95))
    raise RuntimeError(f"could not save {type(model).__name__} in {shards} shards")


def _t5_tokenizer_files(folder: Path) -> None:
    """What the real T5 tokenizer folders hold beside tokenizer.json: the sentencepiece model, the special tokens."""
    from iqabench.support.tiny_modern import t5_sentencepiece_model

    (folder / "spiece.model").write_bytes(t5_sentencepiece_model())
    specials = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))


def modern_pipeline(repo_id: str, seed: int = 0) -> Any:
    from iqabench.support import tiny_modern

    builder, _, _ = MODERN[repo_id]
    pipe = getattr(tiny_modern, builder)(seed)
    if repo_id == PIXART_SIGMA_ID:  # the real repository's scheduler
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler()
    if repo_id == SD35_ID:
        pipe.vae.register_to_config(force_upcast=False)
    return pipe


def save_modern(repo_id: str, folder: Path, seed: int = 0) -> Path:
    """The pipeline's folder as its hub repository holds it (see module docstring)."""
    pipe = modern_pipeline(repo_id, seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    _, shards, t5_folders = MODERN[repo_id]
    for component, count in shards.items():
        _save_sharded(getattr(pipe, component), folder / component, count)
    for name in t5_folders:
        _t5_tokenizer_files(folder / name)
    return folder


def write_modern(cache: Path, repo_ids: Iterable[str] = tuple(MODERN), seed: int = 0) -> dict[str, Path]:
    """Snapshots of the issue-25 presets' pipelines in the hub cache; repo id -> snapshot folder."""
    written: dict[str, Path] = {}
    for repo_id in repo_ids:
        save: Callable[[Path], Any] = lambda d, r=repo_id: save_modern(r, d, seed)  # noqa: E731
        written[repo_id] = write_saved_pretrained(cache, repo_id, save)
    return written
