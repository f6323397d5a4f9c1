"""The one wrapper every metric is used through: device, batching, input range and the differentiable loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..contracts.errors import EnvironmentProblem, UserInputError
from ..store.store import content_key

# pyiqa metrics whose batched implementation is slower than one image at a time: entropy builds a one-hot
# tensor of 256 bins per pixel (N x H x W x 256 int64), which thrashes the cache as N grows (measured: a batch
# of 32 64-px images took 3x longer than 32 single calls with pyiqa 0.1.16).
_MAX_BATCH = {"entropy": 1}


class MetricUnavailableError(EnvironmentProblem):
    """A metric cannot be built here (missing weights or dependency). The message is one sentence."""


class MetricContractError(UserInputError):
    """A metric whose output is not one number per image; raised before any of its scores is stored."""


def one_score_per_image(name: str, out: object, n: int) -> torch.Tensor:
    """The metric output as shape [N], or MetricContractError naming the metric and the shape.

    Reshaping anything else silently (keeping column 0 of [N, 3], copying a
    scalar batch mean to every image) made cached scores depend on the batch.
    """
    if not torch.is_tensor(out):
        raise MetricContractError(f"metric {name!r} returned a {type(out).__name__}, not a tensor of {n} scores "
                                  "(expected shape [N] or [N, 1])")
    shape = tuple(out.shape)
    if (len(shape) >= 1 and shape[0] == n and all(d == 1 for d in shape[1:])) or (shape == () and n == 1):
        return out.reshape(n)  # [N], [N, 1] (and pyiqa's [N, 1, 1, 1]; a 0-d value for a single image)
    raise MetricContractError(f"metric {name!r} returned shape {list(out.shape)} for {n} image(s); a metric must "
                              f"return one number per image, shape [{n}] or [{n}, 1]")


@dataclass(frozen=True)
class MetricInfo:
    name: str
    mode: Literal["NR", "FR"]
    lower_better: bool
    score_range: str | None
    differentiable: bool
    source: str  # "pyiqa" or "user"
    #: The side the model was trained at or resizes its input to (TOPIQ-KonIQ: 384 px crops; CLIP-based: 224),
    #: None when it has none; guidance's ``metric_size=native`` resizes to it. Not in the fingerprint: it
    #: describes the model, it does not change its scores.
    native_side: int | None = None
    #: Scores an image against its prompt (PickScore, CLIPScore, IPCE): the module is called as
    #: ``module(images, prompts)`` and the scorer passes each image's generation prompt. Not in the fingerprint
    #: (the image key already holds the prompt).
    prompt_aware: bool = False


def fingerprint(info: MetricInfo, version: str) -> str:
    """Score-cache key part: name, source and version (pyiqa's version, or the user's ``version=``)."""
    return content_key("metric/v1", info.name, info.source, info.mode, version)[:16]


class Metric:
    """A built metric: scores batches without grad, and exposes a differentiable loss when it can.

    ``score`` takes float images in [0, 1] shaped [N, 3, H, W] and returns [N]
    scores on the CPU in float32. ``loss`` returns a per-image value where lower
    is better (the score negated for higher-is-better metrics), with gradients
    flowing to the input, which is what guidance and ACPO need.
    """

    def __init__(self, info: MetricInfo, module: nn.Module, device: torch.device, version: str = ""):
        self.info = info
        self.name = info.name
        self.mode = info.mode
        self.lower_better = info.lower_better
        self.differentiable = info.differentiable
        self.module = module
        self.device = device
        self._version = version

    def fingerprint(self) -> str:
        return fingerprint(self.info, self._version)

    def _forward(self, images: torch.Tensor, refs: torch.Tensor | None,
                 prompts: Sequence[str] | None = None) -> torch.Tensor:
        images = images.to(self.device, torch.float32)
        if self.info.prompt_aware:
            if prompts is None or len(prompts) != len(images):
                raise MetricUnavailableError(f"metric {self.name!r} scores an image against its prompt, and this "
                                             "use of it passes no prompt per image; use it in relgain, scores or "
                                             "a sweep (they pass each image's prompt)")
            out = self.module(images, list(prompts))
        elif self.mode == "FR":
            if refs is None:
                raise ValueError(f"metric {self.name!r} is full-reference: pass reference images")
            out = self.module(images, refs.to(self.device, torch.float32))
        else:
            out = self.module(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return one_score_per_image(self.name, out, images.shape[0])

    @torch.no_grad()
    def score(self, images: torch.Tensor, refs: torch.Tensor | None = None,
              prompts: Sequence[str] | None = None) -> torch.Tensor:
        """[N] scores; ``prompts`` (one per image) are required by prompt-aware metrics and ignored by others."""
        step = _MAX_BATCH.get(self.name, len(images)) or 1
        parts = [self._forward(images[i : i + step], None if refs is None else refs[i : i + step],
                               None if prompts is None else list(prompts)[i : i + step])
                 for i in range(0, len(images), step)]
        return torch.cat(parts).detach().float().cpu()

    def loss(self, images: torch.Tensor, refs: torch.Tensor | None = None) -> torch.Tensor:
        if not self.differentiable:
            raise MetricUnavailableError(f"metric {self.name!r} is not differentiable, so it cannot be used as a loss")
        with torch.enable_grad():
            value = self._forward(images, refs)
        return value if self.lower_better else -value

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable score (higher or lower better as the metric says), for log-score guidance."""
        if not self.differentiable:
            raise MetricUnavailableError(f"metric {self.name!r} is not differentiable")
        with torch.enable_grad():
            return self._forward(images, None)
