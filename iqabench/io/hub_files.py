"""Which files of a Hugging Face pipeline repo diffusers reads, and where the hub cache is: pure path logic.

Shared by the generators (:mod:`iqabench.adapters.hub_cache`, which checks a snapshot is complete) and by
``iqabench fetch`` (which restricts ``snapshot_download`` to exactly these files), so the two cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: Besides weights, what ``from_pretrained`` reads in a component folder: configs (``config.json``,
#: ``scheduler_config.json``, ``tokenizer_config.json``, shard indexes ...), vocabularies and merges
#: (``vocab.json``, ``merges.txt``, ``vocab.txt``) and sentencepiece models (``spiece.model``, ``tokenizer.model``).
#: Everything else in a hub repo (Flax ``*.msgpack``, ``*.onnx``/``*.onnx_data``, OpenVINO ``*.xml``/``*.bin``,
#: TensorFlow ``*.h5``/``*.pb``/``*.tflite``, original ``*.ckpt``) is another framework's copy of the same weights,
#: often 10 GB each: never listed, never downloaded.
_READ_SUFFIXES = (".json", ".txt", ".model")
#: Weight files of other runtimes that end like PyTorch's (OpenVINO's ``openvino_model.bin``).
_FOREIGN_PREFIXES = ("openvino_",)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment *now*.

    ``huggingface_hub.constants`` freezes these paths at import time, so a test
    or user changing ``HF_HUB_CACHE`` later would otherwise be ignored.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface")
    return Path(home).expanduser() / "hub"


#: Components iqabench never loads (the SD 1.x safety checker blacks out images and would corrupt every IQA
#: score; its feature extractor serves only it): a download without them is complete.
NOT_LOADED = ("safety_checker", "feature_extractor")


def _weight_variant(name: str) -> str | None:
    """``fp16`` of ``diffusion_pytorch_model.fp16.safetensors`` (and of a shard ``...-00001-of-00002.fp16...``)."""
    stem = name.rsplit("/", 1)[-1]
    for suffix in _WEIGHT_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem.rsplit(".", 1)[1] if "." in stem else None


def loaded_files(model_index: Mapping[str, Any], files: list[str], variant: str | None = None) -> list[str]:
    """The files of a pipeline repo (``files``: repo-relative paths) that ``from_pretrained`` reads.

    ``model_index.json``; each loaded component's configs and tokenizer files (:data:`_READ_SUFFIXES`, never
    another framework's copy of the weights); its weights in safetensors when
    the repo has them (``.bin`` only where it has none), of the ``variant`` asked for (diffusers falls back to
    the plain files where a component has no variant). What :data:`NOT_LOADED` names is left out: ``iqabench
    fetch`` restricts ``snapshot_download`` to this list, so it downloads what the run loads and nothing else.
    """
    components = [name for name, value in model_index.items()
                  if not name.startswith("_") and isinstance(value, list) and len(value) == 2
                  and value[0] is not None and name not in NOT_LOADED]
    chosen = ["model_index.json"] if "model_index.json" in files else []
    for component in components:
        mine = sorted(f for f in files if f.startswith(f"{component}/"))
        chosen += [f for f in mine if f.endswith(_READ_SUFFIXES) or f.rsplit("/", 1)[-1].startswith("vocab.")]
        weights = [f for f in mine if f.endswith(_WEIGHT_SUFFIXES)
                   and not f.rsplit("/", 1)[-1].startswith(_FOREIGN_PREFIXES)]
        for pick in ([f for f in weights if f.endswith(".safetensors")], [f for f in weights if f.endswith(".bin")]):
            if not pick:
                continue
            wanted = [f for f in pick if _weight_variant(f) == variant] or [f for f in pick if not _weight_variant(f)]
            chosen += wanted
            break
    return chosen


def snapshot_files(folder: Path) -> list[str]:
    """Repo-relative paths of every file in a local snapshot or pipeline folder."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
