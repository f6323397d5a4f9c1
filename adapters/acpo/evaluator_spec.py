"""``train acpo --evaluator``: one string picks any of ACPO's three stage-1 evaluator kinds.

* ``topiq_nr`` or ``metric:topiq_nr``: (a) a differentiable NR metric (pyiqa or user-registered), mapped onto
  [0, 1] by its declared score range (or ``--score-low/--score-high``);
* ``ipce:runs/ipce/ipce.safetensors``: (b) the IPCE-style CLIP scorer fitted by ``iqabench train ipce``;
* ``two-stream:runs/ts/two_stream.safetensors``: (c) the two-stream network fitted by ``iqabench train two-stream``.

Checkpoints are safetensors with their constructor arguments in the metadata: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError

from .evaluator_files import read_evaluator_info, save_evaluator_file
from .evaluators import MetricEvaluator, TwoStreamIQA

KINDS = ("metric", "ipce", "two-stream")
TWO_STREAM_KEY = "iqabench.two_stream"


def save_two_stream(model: TwoStreamIQA, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save_evaluator_file(tensors, path, TWO_STREAM_KEY, {**model.arguments, **(extra or {})})


def load_two_stream(path: str | Path) -> TwoStreamIQA:
    from safetensors.torch import load_file

    path = Path(path)
    info = read_evaluator_info(path, TWO_STREAM_KEY, "two-stream", "iqabench train two-stream")
    model = TwoStreamIQA(width=int(info["width"]), hidden=int(info["hidden"]), size=info.get("size"))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def parse_evaluator(text: str) -> tuple[str, str]:
    """(kind, argument): ``ipce:<file>``, ``two-stream:<file>``, ``metric:<name>`` or a bare metric name."""
    text = text.strip()
    for kind in KINDS:
        if text.startswith(kind + ":"):
            argument = text[len(kind) + 1:].strip()
            if not argument:
                raise UserInputError(f"--evaluator {text!r} names no {'metric' if kind == 'metric' else 'checkpoint'}")
            return kind, argument
    if not text:
        raise UserInputError("--evaluator is empty: give a metric name, ipce:<file> or two-stream:<file>")
    return "metric", text


def check_evaluator(text: str) -> tuple[str, str]:
    """(kind, argument) of ``text``, resolved without building anything (``train acpo --dry-run``): an unknown
    metric or a missing checkpoint is one sentence here, before any model or weight is loaded."""
    kind, argument = parse_evaluator(text)
    if kind == "ipce":
        if not Path(argument).is_file():
            raise FileNotFoundError(f"no IPCE checkpoint at {argument}; write one with `iqabench train ipce`")
    elif kind == "two-stream":
        if not Path(argument).is_file():
            raise FileNotFoundError(f"no two-stream checkpoint at {argument}; write one with "
                                    "`iqabench train two-stream`")
    else:
        from iqabench.metrics import metric_info

        info = metric_info(argument)  # an unknown name raises with close matches
        if not info.differentiable:
            raise UserInputError(f"--evaluator {argument!r} is not differentiable, so it cannot train ACPO: pick a "
                                 "differentiable metric (e.g. topiq_nr), ipce:<file> or two-stream:<file>")
    return kind, argument


def build_evaluator(text: str, runtime: Any, score_low: float | None = None,
                    score_high: float | None = None) -> torch.nn.Module:
    """The bounded, differentiable Q(images, prompts) in [0, 1] that ``text`` names (see module docstring)."""
    kind, argument = parse_evaluator(text)
    if kind == "ipce":
        from .ipce import load_ipce

        return load_ipce(argument, runtime.torch_device)
    if kind == "two-stream":
        return load_two_stream(argument)
    from iqabench.metrics import build_metric

    if score_low is None and score_high is None:
        score_low, score_high = score_range(argument)
    return MetricEvaluator(build_metric(argument, runtime, as_loss=True), score_low, score_high)


def score_range(metric: str) -> tuple[float | None, float | None]:
    """(low, high) from the metric's declared range ("0, 100", "~0, ~1"), so Q = (s - low) / (high - low).

    A metric with no usable range falls back to the evaluator's sigmoid squash.
    """
    from iqabench.metrics import metric_info

    text = metric_info(metric).score_range or ""
    parts = [p.strip().lstrip("~") for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        return None, None
    return (low, high) if high > low else (None, None)
