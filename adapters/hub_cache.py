"""Where a diffusers pipeline's weights live: the Hugging Face cache or a local folder, looked up offline.

Nothing here loads or downloads anything: a factory asks :func:`find_weights`
whether the files a pipeline needs are present, so a missing model fails with one
sentence before any work starts. ``huggingface_hub.constants`` freezes the cache
path at import time; :func:`hub_cache_dir` reads the environment on every call
instead, so a test or user setting ``HF_HUB_CACHE`` later is honoured.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqabench.io.hub_files import (  # noqa: F401 - re-exported: where the generators have always imported them
    _WEIGHT_SUFFIXES,
    NOT_LOADED,
    hub_cache_dir,
    loaded_files,
    snapshot_files,
)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# -- where weights live --------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsLocation:
    """Where a pipeline's files were found: a folder, plus the hub commit when it came from the cache."""

    folder: Path
    commit: str | None
    model_index: dict[str, Any]


#: What a tokenizer folder needs besides its config: one of the vocabularies the tokenizers read.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model")


def _component_gap(sub: Path, cls: str, variant: str | None, denoiser: bool) -> str | None:
    """What a present component folder lacks for its loader, or None when complete.

    A download interrupted midway leaves some folders without their weights (hub files appear only when whole):
    a model needs its ``config.json`` and weights (every shard its index names), a tokenizer a vocabulary, a
    scheduler its config. Such a snapshot is missing, so the preflight names it and ``fetch`` completes it.
    """
    names = {p.name for p in sub.iterdir() if p.is_file()}
    if cls.endswith("Scheduler"):
        return None if "scheduler_config.json" in names else "scheduler_config.json"
    if "Tokenizer" in cls:
        return None if names & set(_TOKENIZER_FILES) else "tokenizer files"
    if cls.endswith(("FeatureExtractor", "ImageProcessor", "Processor")):
        return None if "preprocessor_config.json" in names else "preprocessor_config.json"
    if "config.json" not in names:
        return "config.json"
    weights = [n for n in names if n.endswith(_WEIGHT_SUFFIXES) and not n.startswith("openvino_")]
    if variant and denoiser:
        weights = [n for n in weights if f".{variant}." in n]
    if not weights:
        return "weights" + (f" ({variant})" if variant and denoiser else "")
    for index in (n for n in names if n.endswith(".index.json")):
        try:
            shards = set(json.loads((sub / index).read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, json.JSONDecodeError, AttributeError):
            return index
        if shards - names:
            return f"weight shard(s) {', '.join(sorted(shards - names))}"
    return None


def _missing_components(folder: Path, model_index: Mapping[str, Any], variant: str | None) -> list[str]:
    """Every loaded component (per model_index.json, less :data:`NOT_LOADED`) without a folder, or whose folder
    lacks what its loader reads (:func:`_component_gap`)."""
    missing = []
    for name, value in model_index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        if name in NOT_LOADED:
            continue
        sub = folder / name
        if not sub.is_dir():
            missing.append(name)
            continue
        gap = _component_gap(sub, str(value[1] or ""), variant, name in ("unet", "transformer", "prior"))
        if gap:
            missing.append(f"{name} {gap}")
    return missing


def find_weights(source: str, *, path: str | None = None, revision: str | None = None,
                 variant: str | None = None) -> tuple[WeightsLocation | None, str]:
    """Look for a pipeline's files without loading or downloading anything.

    Returns ``(location, detail)``; ``location`` is None when the files are
    missing, and ``detail`` then says what is missing and where it looked.
    """
    if path is not None:
        folder = Path(path).expanduser().resolve()
        index = folder / "model_index.json"
        if not index.is_file():
            return None, f"no model_index.json in {folder}"
        where, commit = folder, None
    else:
        from huggingface_hub import try_to_load_from_cache

        cache = hub_cache_dir()
        found = try_to_load_from_cache(source, "model_index.json", cache_dir=cache, revision=revision)
        if not isinstance(found, str):
            return None, f"{source} is not in the Hugging Face cache at {cache}"
        index = Path(found)
        where = index.parent
        commit = where.name if re.fullmatch(r"[0-9a-f]{40}", where.name) else None
    try:
        model_index = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{index} is not readable JSON ({exc})"
    missing = _missing_components(where, model_index, variant)
    if missing:
        return None, f"{where} lacks {', '.join(missing)}"
    return WeightsLocation(where, commit, model_index), str(where)


def weights_status(source: str, **kwargs: Any) -> tuple[bool, str]:
    """``(present, detail)`` for ``iqabench list generators`` (the registry's ``weights=`` probe)."""
    location, detail = find_weights(source, **kwargs)
    return location is not None, detail


def local_signature(folder: Path) -> str:
    """Hash of the weight/config files' names and sizes: a re-saved local folder gets a new fingerprint."""
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(f"{file.relative_to(folder).as_posix()}:{file.stat().st_size};".encode())
    return digest.hexdigest()[:16]
