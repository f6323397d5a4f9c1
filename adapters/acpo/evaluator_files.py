"""Stage-1 evaluator files: safetensors whose metadata holds, as JSON under one key, what rebuilding the model
needs (its constructor arguments, the CLIP it was fitted on). Nothing is unpickled: tensors are safetensors,
the rest is JSON. The IPCE-style scorer and the two-stream network both write and read this layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError


def save_evaluator_file(tensors: dict[str, torch.Tensor], path: str | Path, key: str, info: dict[str, Any]) -> Path:
    """Write ``tensors`` to ``path`` (folders created) with ``info`` as JSON under the metadata ``key``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={key: json.dumps(info)})
    return path


def read_evaluator_info(path: Path, key: str, kind: str, train_command: str) -> dict[str, Any]:
    """The JSON under the metadata ``key`` of a ``kind`` checkpoint; a missing file or key is one clear error."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no {kind} checkpoint at {path}; write one with `{train_command}`")
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(key)
    if raw is None:
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise UserInputError(f"{path} is not {article} {kind} checkpoint (no {key!r} metadata)")
    return json.loads(raw)
