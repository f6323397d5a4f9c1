"""Registering metrics, building them, and the checks done before any work starts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..contracts.errors import UserInputError
from ..contracts.needs import Need
from ..contracts.registry import METRICS, Entry
from ..execution.runtime import Runtime
from .wrapper import Metric, MetricInfo, MetricUnavailableError, fingerprint


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
    native_side: int | None = None,
    prompt_aware: bool = False,
):
    """Register a user IQA model: decorate ``factory(device) -> nn.Module`` mapping [N,3,H,W] in [0,1] to [N].

    ``version`` goes into the score-cache key: change it when the model's weights change. ``native_side``:
    the image side the model was trained at, if any (what guidance's ``metric_size=native`` resizes to).
    ``prompt_aware``: the factory's module is ``module(images, prompts) -> [N]`` and gets each image's prompt.
    """
    if mode not in ("NR", "FR"):
        raise ValueError(f"metric mode must be 'NR' or 'FR', not {mode!r}")

    def decorator(factory: Callable[[torch.device], nn.Module]):
        info = MetricInfo(name, mode, bool(lower_better), score_range, bool(differentiable), "user",
                          native_side, bool(prompt_aware))
        doc = description or (factory.__doc__ or "").strip().split("\n")[0] or "user-registered metric"
        METRICS.add(Entry(name, factory, doc, weights, {"info": info, "version": version}), overwrite=overwrite)
        return factory

    return decorator


def offline_mode() -> bool:
    """True when the user said there is no network: we then fail at once instead of retrying downloads."""
    flags = (os.environ.get(var, "").strip().lower() for var in ("HF_HUB_OFFLINE", "IQABENCH_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)  # huggingface_hub's own truthy values


#: Parameterised metric names: prefix -> the module whose ``register_family_metric(name)`` registers such a name on
#: first use. Imported by name, as the registries import their built-in plugin modules (the core imports no
#: plugin package); plugins may add their own prefix.
METRIC_FAMILIES: dict[str, str] = {"ipce:": "iqabench.adapters.acpo.metric"}


def resolve_metric(name: str) -> None:
    """Register a parameterised metric name (``ipce:<checkpoint>``) on first use; other names are untouched."""
    import importlib

    for prefix, module in METRIC_FAMILIES.items():
        if name.startswith(prefix) and name not in METRICS._entries:
            importlib.import_module(module).register_family_metric(name)


def metric_info(name: str) -> MetricInfo:
    resolve_metric(name)
    return METRICS.get(name).extra["info"]


def metric_fingerprint(name: str) -> str:
    """The fingerprint ``build_metric(name).fingerprint()`` will have, without building the model."""
    resolve_metric(name)
    entry = METRICS.get(name)
    return fingerprint(entry.extra["info"], str(entry.extra.get("version", "")))


def check_available(name: str, *, trust_hub_code: bool = False) -> None:
    """Fail before any work when a metric surely cannot be built here (a weights file missing, offline mode on),
    or would run code from a cache without the user's opt-in (:mod:`iqabench.io.hub_code`)."""
    _refuse_cached_code(name, trust_hub_code)
    info = metric_info(name)
    if info.source == "pyiqa":
        from .pyiqa_weights import pyiqa_refusal

        refused = pyiqa_refusal(name)
        if refused:  # a planted file: refused before pyiqa reads anything
            raise MetricUnavailableError(f"metric {name!r} was not built: {refused}")
    if offline_mode():
        entry = METRICS.get(name)
        present, detail = entry.weights() if entry.weights is not None else (None, "")
        if present is False:
            raise MetricUnavailableError(
                f"metric {name!r} cannot be built offline (HF_HUB_OFFLINE/IQABENCH_OFFLINE): {detail}, "
                "or pick a metric that needs no download (e.g. piqe, entropy)"
            )


def _refuse_cached_code(name: str, trust_hub_code: bool) -> None:
    from ..io.hub_code import is_trusted, refusal

    refused = None if trust_hub_code or is_trusted() else refusal(name)  # is_trusted: inside build_metric's opt-in
    if refused:
        raise MetricUnavailableError(refused)


def build_metric(name: str, runtime: Runtime | None = None, *, as_loss: bool = False,
                 trust_hub_code: bool = False) -> Metric:
    """Build a registered metric on the runtime's device. ``as_loss=True`` builds pyiqa models in loss mode.

    ``trust_hub_code`` lets a metric import code from a cache (``torch.hub.load``; see :mod:`iqabench.io.hub_code`),
    refused otherwise."""
    from ..io import hub_code, safe_load

    _refuse_cached_code(name, trust_hub_code)
    safe_load.install()  # whatever the factory reads from a cache is read as tensors only
    with hub_code.trusted(trust_hub_code):
        return _build(name, runtime, as_loss)


def _build(name: str, runtime: Runtime | None, as_loss: bool) -> Metric:
    runtime = runtime or Runtime()
    resolve_metric(name)
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
        raise UserInputError("no metrics given: pass e.g. --metrics piqe,entropy")
    for name in names:
        resolve_metric(name)
        METRICS.get(name)  # raises UnknownNameError with suggestions
    return list(dict.fromkeys(names))


def metric_needs(name: str) -> list[Need]:
    """Every file building metric ``name`` reads (pyiqa's table), or the user probe's verdict as one need."""
    entry = METRICS.get(name)
    if entry.extra["info"].source == "pyiqa":
        from ..metric_catalog import needs
        from .pyiqa_weights import pyiqa_needs

        listed = needs(name)  # the per-version table: no arch module imported
        return pyiqa_needs(name) if listed is None else listed
    from ..metric_catalog import PREFERENCE_FILES
    from .preference_weights import preference_weight_files

    if name in PREFERENCE_FILES:  # the released files in their hub repositories: `iqabench fetch` downloads them
        return [f.need(name) for f in preference_weight_files(name)]
    if entry.weights is None:
        return []
    try:
        present, detail = entry.weights()
    except Exception as exc:  # a user's probe must not stop the preflight; the build still checks for itself
        return [Need(f"metric {name}", Path("."), "manual", f"its weights probe raised {exc}", True)]
    return [Need(f"metric {name} weights", Path(detail if present else "."), "manual", detail or "its plugin",
                 present is not False, message=f"metric {name!r}: {detail}")]
