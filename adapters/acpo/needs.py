"""Every file ``train acpo`` will load, declared the way a run declares its files (:mod:`iqabench.contracts.needs`).

The base generator's factory declares its pipeline snapshot while it is built (nothing is loaded), and the
evaluator adds its own: a metric's files from the same table a run's preflight reads, an IPCE checkpoint and
the CLIP it rebuilds, or a two-stream checkpoint. ``train acpo`` checks these before loading anything, and
``iqabench fetch train acpo ...`` lists or downloads them: one list, used by both.
"""

from __future__ import annotations

import json
from pathlib import Path

from iqabench.contracts.needs import Need, collecting, open_clip_needs, unique
from iqabench.execution.runtime import Runtime


def _checkpoint_need(kind: str, path: Path, command: str) -> Need:
    present = path.is_file()
    return Need(f"{kind} evaluator checkpoint", path, "manual", f"your own, written by `iqabench {command}`",
                present, size=path.stat().st_size if present else None,
                message=f"no {kind} checkpoint at {path}; write one with `iqabench {command}`")


def _ipce_clip(path: Path) -> list[Need]:
    """The CLIP an IPCE checkpoint names in its metadata (``clip``, ``weights``), when that is a pretrained tag."""
    from .ipce import METADATA_KEY

    info = _metadata(path).get(METADATA_KEY)
    if not info:
        return []
    try:
        fields = json.loads(info)
    except ValueError:
        return []  # the loader itself refuses the file with its sentence
    weights = fields.get("weights")
    if not weights or Path(str(weights)).suffix == ".safetensors":
        return []  # no pretrained weights, or a local file the checkpoint names
    return open_clip_needs(str(fields["clip"]), str(weights))


def _metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, read from its header (no tensor is read, nothing unpickled)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # not a safetensors file: the loader refuses it with its own sentence
        return {}


def acpo_needs(base: str, evaluator: str, runtime: Runtime | None = None) -> list[Need]:
    """The base pipeline's files and the evaluator's, present or not (see the module docstring).

    An unknown or non-differentiable metric is still one sentence (:func:`.evaluator_spec.check_evaluator`); a
    missing checkpoint is a missing need, so the table names it with the rest.
    """
    from iqabench.contracts.generators import build_generator
    from iqabench.metrics import metric_needs

    from .evaluator_spec import check_evaluator, parse_evaluator

    runtime = runtime or Runtime(device="auto", dtype="fp32")
    with collecting() as declared:
        build_generator(base, runtime)  # the factory declares its snapshot; nothing is loaded
    needs = list(declared)
    kind, argument = parse_evaluator(evaluator)
    if kind == "metric":
        check_evaluator(evaluator)
        needs += metric_needs(argument)
    else:
        path = Path(argument).expanduser()
        needs.append(_checkpoint_need(kind, path, "train ipce" if kind == "ipce" else "train two-stream"))
        if kind == "ipce" and path.is_file():
            needs += _ipce_clip(path)
    return unique(needs)


def ipce_training_needs(clip: str, weights: str | None) -> list[Need]:
    """``train ipce``'s CLIP: open_clip's pretrained file for a tag, or the user's own weights file."""
    if not weights:
        return []
    path = Path(weights).expanduser()
    if path.suffix == ".safetensors":
        present = path.is_file()
        return [Need(f"CLIP {clip} weights (--weights)", path, "manual", "your own file", present,
                     size=path.stat().st_size if present else None, message=f"no CLIP weights file at {path}")]
    return open_clip_needs(clip, weights)
