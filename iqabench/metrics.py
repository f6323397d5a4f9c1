"""IQA/IAA metrics: every pyiqa metric by its pyiqa name, plus user-registered models.

As in ``pyiqa/default_model_configs.py`` + ``inference_model.py``, a metric is
declarative metadata (NR/FR, lower_better, score range, differentiable) plus a
factory; one wrapper (:class:`Metric`) handles device, batching, input range
and the differentiable ``loss`` used by guidance and training.

Registering your own model takes a few lines::

    from iqabench.metrics import register_metric

    @register_metric("my_sharpness", lower_better=False, differentiable=True)
    def build(device):
        return MySharpnessNet().to(device)   # nn.Module: [N,3,H,W] in [0,1] -> [N] scores
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .registry import METRICS, Entry
from .runtime import Runtime
from .store import content_key

# Checked with pyiqa 0.1.16 on a machine with no network: these build and score with no download.
NO_DOWNLOAD_METRICS = frozenset(
    {"piqe", "entropy", "psnr", "psnry", "ssim", "ssimc", "fsim", "vif", "gmsd", "vsi", "mad", "nlpd", "cw_ssim",
     "ms_ssim"}
)


# pyiqa metrics whose batched implementation is slower than one image at a time: entropy builds a one-hot
# tensor of 256 bins per pixel (N x H x W x 256 int64), which thrashes the cache as N grows (measured: a batch
# of 32 64-px images took 3x longer than 32 single calls with pyiqa 0.1.16).
_MAX_BATCH = {"entropy": 1}


class MetricUnavailableError(RuntimeError):
    """A metric cannot be built here (missing weights or dependency). The message is one sentence."""


@dataclass(frozen=True)
class MetricInfo:
    name: str
    mode: Literal["NR", "FR"]
    lower_better: bool
    score_range: str | None
    differentiable: bool
    source: str  # "pyiqa" or "user"


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
        return _fingerprint(self.info, self._version)

    def _forward(self, images: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        images = images.to(self.device, torch.float32)
        if self.mode == "FR":
            if refs is None:
                raise ValueError(f"metric {self.name!r} is full-reference: pass reference images")
            out = self.module(images, refs.to(self.device, torch.float32))
        else:
            out = self.module(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(images.shape[0], -1)[:, 0] if out.ndim > 0 else out.expand(images.shape[0])

    @torch.no_grad()
    def score(self, images: torch.Tensor, refs: torch.Tensor | None = None) -> torch.Tensor:
        step = _MAX_BATCH.get(self.name, len(images)) or 1
        parts = [self._forward(images[i : i + step], None if refs is None else refs[i : i + step])
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


# -- registration -----------------------------------------------------------------------------
def register_metric(
    name: str,
    *,
    lower_better: bool,
    mode: Literal["NR", "FR"] = "NR",
    differentiable: bool = True,
    score_range: str | None = None,
    description: str = "",
    version: str = "",
    weights: Callable[[], tuple[bool, str]] | None = None,
    overwrite: bool = False,
):
    """Register a user IQA model: decorate ``factory(device) -> nn.Module`` mapping [N,3,H,W] in [0,1] to [N].

    ``version`` goes into the score-cache key: change it when the model's weights change.
    """
    if mode not in ("NR", "FR"):
        raise ValueError(f"metric mode must be 'NR' or 'FR', not {mode!r}")

    def decorator(factory: Callable[[torch.device], nn.Module]):
        info = MetricInfo(name, mode, bool(lower_better), score_range, bool(differentiable), "user")
        doc = description or (factory.__doc__ or "").strip().split("\n")[0] or "user-registered metric"
        METRICS.add(Entry(name, factory, doc, weights, {"info": info, "version": version}), overwrite=overwrite)
        return factory

    return decorator


def _pyiqa_configs() -> dict[str, dict[str, Any]]:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS


def _pyiqa_cache_dir() -> Path:
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    return Path(DEFAULT_CACHE_DIR)


_WEIGHT_EXT = r"\.(?:pth|pt|bin|mat|safetensors|npz|pkl|ckpt|tar)"
# 'model_name': get_url_from_name('file.pth')  or  'model_name': 'https://.../file.pth'
_URL_RE = re.compile(r"['\"]([\w\-.]+)['\"]\s*:\s*(?:get_url_from_name\(\s*)?['\"]([^'\"]+" + _WEIGHT_EXT + r")['\"]")
_ANY_URL_RE = re.compile(r"(?:get_url_from_name\(\s*['\"]|https?://)([^'\"\s]+" + _WEIGHT_EXT + r")")


@functools.lru_cache(maxsize=1)
def _pyiqa_arch_sources() -> dict[str, Path]:
    """Map each pyiqa arch class name to its source file, by reading the files (importing them is slow)."""
    import pyiqa.archs

    sources: dict[str, Path] = {}
    for path in Path(pyiqa.archs.__file__).parent.glob("*.py"):
        for class_name in re.findall(r"^class (\w+)\(", path.read_text("utf-8", errors="replace"), re.M):
            sources.setdefault(class_name, path)
    return sources


def _pyiqa_weight_files(name: str) -> list[str]:
    """File names pyiqa downloads into its cache for this metric, read from its arch source."""
    opts = _pyiqa_configs()[name]["metric_opts"]
    path = _pyiqa_arch_sources().get(str(opts["type"]))
    if path is None:
        return []
    text = path.read_text("utf-8", errors="replace")
    named = dict(_URL_RE.findall(text))
    model_name = opts.get("model_name") or opts.get("pretrained_model_path")
    if isinstance(model_name, str) and model_name in named:
        urls = [named[model_name]]
    elif isinstance(model_name, str) and model_name.startswith("http"):
        urls = [model_name]
    else:
        urls = sorted(set(named.values()) | set(_ANY_URL_RE.findall(text)))
    return [os.path.basename(u.split("?")[0]) for u in urls]


def offline_mode() -> bool:
    """True when the user said there is no network: we then fail at once instead of retrying downloads."""
    flags = (os.environ.get(var, "").lower() for var in ("HF_HUB_OFFLINE", "IQABENCH_OFFLINE"))
    return any(flag in ("1", "true", "yes") for flag in flags)


def pyiqa_weights_status(name: str) -> tuple[bool, str]:
    if name in NO_DOWNLOAD_METRICS:
        return True, "no download needed"
    files = _pyiqa_weight_files(name)
    cache = _pyiqa_cache_dir()
    if not files:
        return False, f"unknown weight files; pyiqa caches downloads in {cache}"
    present = [f for f in files if (cache / f).is_file()]
    if present:
        return True, f"{present[0]} in {cache} (backbone weights not checked)"
    return False, f"{files[0]} not in {cache}"


def pyiqa_info(name: str) -> MetricInfo:
    config = _pyiqa_configs()[name]
    mode = config.get("metric_mode", "NR")
    # Classical metrics with hand-crafted, non-smooth steps (block classification, histograms) have no useful
    # gradient; pyiqa marks none of this, so we treat learned (weight-downloading) models and the smooth FR
    # formulas as differentiable and the rest as not.
    non_differentiable = {"piqe", "entropy", "niqe", "brisque", "ilniqe", "nrqm", "pi", "niqe_matlab",
                          "brisque_matlab", "fid", "inception_score"}
    return MetricInfo(
        name=name,
        mode="FR" if mode == "FR" else "NR",
        lower_better=bool(config.get("lower_better", False)),
        score_range=config.get("score_range"),
        differentiable=name not in non_differentiable and not name.startswith(("niqe", "brisque", "ilniqe")),
        source="pyiqa",
    )


def _register_pyiqa_metrics() -> None:
    for name in _pyiqa_configs():
        if name in ("fid", "inception_score") or name in METRICS._entries:
            continue
        info = pyiqa_info(name)
        description = f"pyiqa {info.mode}, {'lower' if info.lower_better else 'higher'} is better" + (
            f", range {info.score_range}" if info.score_range else ""
        )
        METRICS.add(
            Entry(name, _pyiqa_factory(name), description, lambda n=name: pyiqa_weights_status(n),
                  {"info": info, "version": _pyiqa_version()})
        )


def _pyiqa_version() -> str:
    try:
        import pyiqa

        return str(getattr(pyiqa, "__version__", ""))
    except Exception:  # pragma: no cover
        return ""


def _pyiqa_factory(name: str) -> Callable[[torch.device], nn.Module]:
    def build(device: torch.device, as_loss: bool = False) -> nn.Module:
        import pyiqa

        check_available(name)
        try:
            return pyiqa.create_metric(name, device=device, as_loss=as_loss, loss_reduction="none")
        except Exception as exc:
            present, detail = pyiqa_weights_status(name)
            reason = f"its weights are missing ({detail})" if not present else f"pyiqa failed: {exc}"
            raise MetricUnavailableError(
                f"metric {name!r} could not be built: {reason}; put the file in pyiqa's cache "
                f"({_pyiqa_cache_dir()}) from a machine with internet, or pick a metric that needs no download "
                f"(e.g. piqe, entropy)"
            ) from exc

    build.__doc__ = f"pyiqa metric {name}"
    return build


def _fingerprint(info: MetricInfo, version: str) -> str:
    """Score-cache key part: name, source and version (pyiqa's version, or the user's ``version=``)."""
    return content_key("metric/v1", info.name, info.source, info.mode, version)[:16]


def metric_fingerprint(name: str) -> str:
    """The fingerprint ``build_metric(name).fingerprint()`` will have, without building the model."""
    entry = METRICS.get(name)
    return _fingerprint(entry.extra["info"], str(entry.extra.get("version", "")))


def check_available(name: str) -> None:
    """Fail before any work when a metric surely cannot be built here (pyiqa weights missing, offline mode on)."""
    info = metric_info(name)
    if info.source == "pyiqa" and offline_mode():
        present, detail = pyiqa_weights_status(name)
        if not present:
            raise MetricUnavailableError(
                f"metric {name!r} needs weights that are not in pyiqa's cache ({detail}) and offline mode is on "
                "(HF_HUB_OFFLINE/IQABENCH_OFFLINE); copy the file there or pick a metric that needs no download "
                "(e.g. piqe, entropy)"
            )


def metric_info(name: str) -> MetricInfo:
    return METRICS.get(name).extra["info"]


def build_metric(name: str, runtime: Runtime | None = None, *, as_loss: bool = False) -> Metric:
    """Build a registered metric on the runtime's device. ``as_loss=True`` builds pyiqa models in loss mode."""
    runtime = runtime or Runtime()
    entry = METRICS.get(name)
    info: MetricInfo = entry.extra["info"]
    device = runtime.torch_device
    if info.source == "pyiqa":
        # pyiqa's loss mode only enables grad and skips the input-range check; it negates nothing.
        module = entry.factory(device, as_loss=as_loss and info.differentiable)
    else:
        module = entry.factory(device)
        if not isinstance(module, nn.Module):
            raise TypeError(f"metric factory for {name!r} must return an nn.Module, got {type(module).__name__}")
        module = module.to(device).eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return Metric(info, module, device, version=str(entry.extra.get("version", "")))


def parse_metric_list(text: str | list[str]) -> list[str]:
    names = text if isinstance(text, list) else [n.strip() for n in str(text).split(",")]
    names = [n for n in names if n]
    if not names:
        raise ValueError("no metrics given: pass e.g. --metrics piqe,entropy")
    for name in names:
        METRICS.get(name)  # raises UnknownNameError with suggestions
    return list(dict.fromkeys(names))


_register_pyiqa_metrics()
