"""Every pyiqa metric, registered by its pyiqa name with metadata read from pyiqa's ``DEFAULT_CONFIGS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..contracts.registry import METRICS, Entry
from .pyiqa_weights import pyiqa_cache_dir, pyiqa_weights_status, reads_no_files
from .registration import check_available
from .wrapper import MetricInfo, MetricUnavailableError

# Checked with pyiqa 0.1.16 on a machine with no network: these build and score with no download.
NO_DOWNLOAD_METRICS = frozenset(
    {"piqe", "entropy", "psnr", "psnry", "ssim", "ssimc", "fsim", "vif", "gmsd", "vsi", "mad", "nlpd", "cw_ssim",
     "ms_ssim"}
)

# Classical metrics with hand-crafted, non-smooth steps (block classification, histograms) have no useful
# gradient; pyiqa marks none of this, so we treat learned (weight-downloading) models and the smooth FR
# formulas as differentiable and the rest as not.
_NON_DIFFERENTIABLE = {"piqe", "entropy", "niqe", "brisque", "ilniqe", "nrqm", "pi", "niqe_matlab",
                       "brisque_matlab", "fid", "inception_score"}

#: The input side each model was trained at or resizes to itself, where one is documented (guidance's
#: ``metric_size=native``): topiq_nr, pyiqa's options/train/TOPIQ/train_TOPIQ_res50_koniq.yml (random 384 px
#: crops of KonIQ at 512x384; the ResNet-50 variant runs at any size at test time); hyperiqa, its arch averages
#: 25 uniform 224-px crops at test time; laion_aes, OpenAI CLIP ViT-L/14 preprocessing (shorter side 224, centre crop).
NATIVE_SIDES = {"topiq_nr": 384, "hyperiqa": 224, "laion_aes": 224}


def pyiqa_configs() -> dict[str, dict[str, Any]]:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS


def pyiqa_version() -> str:
    try:
        import pyiqa

        return str(getattr(pyiqa, "__version__", ""))
    except Exception:  # pragma: no cover
        return ""


def pyiqa_info(name: str) -> MetricInfo:
    config = pyiqa_configs()[name]
    mode = config.get("metric_mode", "NR")
    return MetricInfo(
        name=name,
        mode="FR" if mode == "FR" else "NR",
        lower_better=bool(config.get("lower_better", False)),
        score_range=config.get("score_range"),
        differentiable=name not in _NON_DIFFERENTIABLE and not name.startswith(("niqe", "brisque", "ilniqe")),
        source="pyiqa",
        native_side=NATIVE_SIDES.get(name),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _pyiqa_factory(name: str) -> Callable[..., nn.Module]:
    def build(device: torch.device, as_loss: bool = False) -> nn.Module:
        import pyiqa

        from ..io import safe_load

        if not reads_no_files(name):  # a metric that reads no file downloads no CLIP either: `clip` costs ~0.5 s
            safe_load.import_clip_loaders()  # so that install() patches their CLIP downloads too
        safe_load.install()
        check_available(name)
        try:
            return pyiqa.create_metric(name, device=device, as_loss=as_loss, loss_reduction="none")
        except safe_load.UnsafeCheckpointError as exc:
            raise MetricUnavailableError(f"metric {name!r} was not built: {exc}") from None
        except Exception as exc:
            present, detail = pyiqa_weights_status(name)
            if present is False:
                reason = detail
            else:
                reason = f"pyiqa failed ({_first_line(exc)}); its weights live in {pyiqa_cache_dir()}"
            raise MetricUnavailableError(
                f"metric {name!r} could not be built: {reason}; provide the file from a connected machine, or pick "
                "a metric that needs no download (e.g. piqe, entropy)"
            ) from exc

    build.__doc__ = f"pyiqa metric {name}"
    return build


def register_pyiqa_metrics() -> None:
    for name in pyiqa_configs():
        if name in ("fid", "inception_score") or name in METRICS._entries:
            continue
        info = pyiqa_info(name)
        description = f"pyiqa {info.mode}, {'lower' if info.lower_better else 'higher'} is better" + (
            f", range {info.score_range}" if info.score_range else ""
        )
        METRICS.add(
            Entry(name, _pyiqa_factory(name), description, lambda n=name: pyiqa_weights_status(n),
                  {"info": info, "version": pyiqa_version()})
        )
