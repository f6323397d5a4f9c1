"""``ipce:<checkpoint>`` as a prompt-aware metric: the IPCE evaluator ``iqabench train ipce`` fits, scoring an image
against its prompt on the table's MOS scale (1-5 by default). ACPO's Table 2 reports it beside PickScore and
CLIPScore.

The metric registry imports this module by name the first time a run names an ``ipce:`` metric
(``iqabench.metrics.registration.METRIC_FAMILIES``); the score-cache version is the checkpoint's SHA-256, so a
re-fitted evaluator never reuses old scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PREFIX = "ipce:"


class IpceMetric(nn.Module):
    """An IPCE checkpoint's predicted MOS (its ``mos_range``, 1-5 by default) for an image and its prompt."""

    def __init__(self, path: str, device: torch.device):
        super().__init__()
        from .ipce import load_ipce

        self.evaluator = load_ipce(path, device)

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.evaluator.mos(images, list(prompts))


def register_family_metric(name: str) -> None:
    """Register ``ipce:<checkpoint>`` (a prompt-aware metric) the first time a run names it.

    The score-cache version is the checkpoint's SHA-256, so a re-fitted evaluator never reuses old scores.
    """
    import hashlib
    from pathlib import Path

    from iqabench.contracts.registry import METRICS
    from iqabench.metrics import register_metric

    from .evaluator_files import read_evaluator_info
    from .ipce import METADATA_KEY

    if name in METRICS._entries:
        return
    path = Path(name[len(PREFIX):]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"metric {name!r}: no IPCE checkpoint at {path}; write one with `iqabench train ipce`")
    info = read_evaluator_info(path, METADATA_KEY, "IPCE", "iqabench train ipce")
    low, high = info["mos_range"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def build(device: torch.device) -> nn.Module:
        return IpceMetric(str(path), device)

    register_metric(name, lower_better=False, differentiable=False, prompt_aware=True, score_range=f"{low}, {high}",
                    version=f"ipce-sha256-{digest}", description=f"IPCE evaluator {path.name} (predicted MOS)")(build)
