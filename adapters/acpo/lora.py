"""LoRA on a diffusion UNet through peft, saved and loaded as safetensors.

Text-to-image UNets (``UNet2DConditionModel``) carry diffusers' ``PeftAdapterMixin``:
we use ``unet.add_adapter(LoraConfig(...))``, ``save_lora_adapter`` /
``load_lora_adapter`` and ``disable_adapters`` / ``enable_adapters``, as
diffusers' own LoRA training scripts do. The unconditional ``UNet2DModel``
(ACPO's DDPM experiments) lacks that mixin, so the same four operations go
through peft's functions directly (``inject_adapter_in_model``,
``get/set_peft_model_state_dict``, the tuner layers' ``enable_adapters``);
the file has the same key layout either way.

LoRA B starts at zero (peft's default), so a fresh adapter reproduces the base
UNet exactly and the anchor term starts at 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqabench.contracts.errors import UserInputError

from .config import ALL_LINEAR, PAPER_LORA_TARGETS

LORA_FILE = "pytorch_lora_weights.safetensors"
#: ACPO paper: LoRA on the U-Net's linear layers (every ``nn.Linear``: attention q/k/v/out, feed-forward,
#: projections, time-embedding MLPs). Pass e.g. ``("to_q", "to_k", "to_v", "to_out.0")`` for attention only.
DEFAULT_TARGETS = PAPER_LORA_TARGETS
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_META_KEY = "acpo_lora"


def _has_mixin(unet: Any) -> bool:
    return hasattr(unet, "add_adapter") and hasattr(unet, "save_lora_adapter")


def resolve_targets(unet: nn.Module, targets: Sequence[str]) -> list[str]:
    """``targets`` with ``all-linear`` expanded to the full names of every ``nn.Linear`` in ``unet``.

    Full names, not suffixes: a suffix such as ``proj`` would also catch a 1x1 ``Conv2d`` (SD 1.x's
    ``proj_in``), which peft would then wrap too. peft's own ``all-linear`` shorthand is resolved only for
    transformers models, so diffusers UNets need this.
    """
    names: list[str] = []
    for target in targets:
        if target == ALL_LINEAR:
            names += [n for n, m in unet.named_modules() if isinstance(m, nn.Linear) and "lora_" not in n]
        else:
            names.append(target)
    return sorted(set(names))


def lora_config(rank: int = 4, alpha: float | None = None, targets: Sequence[str] = ATTENTION_TARGETS):
    """peft ``LoraConfig`` on module names (already resolved: see :func:`resolve_targets`)."""
    from peft import LoraConfig

    if rank < 1:
        raise UserInputError(f"LoRA rank must be >= 1, got {rank}")
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                      target_modules=list(targets))


def add_lora(unet: Any, rank: int = 4, alpha: float | None = None, targets: Sequence[str] = DEFAULT_TARGETS) -> None:
    """Freeze ``unet`` and add a trainable LoRA adapter (named ``default``) on ``targets`` (default: every linear)."""
    unet.requires_grad_(False)
    config = lora_config(rank, alpha, resolve_targets(unet, targets))
    if _has_mixin(unet):
        unet.add_adapter(config)
    else:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, unet)
    if not any(p.requires_grad for p in unet.parameters()):
        raise UserInputError(f"no module of {type(unet).__name__} matches the LoRA targets {list(targets)}")


def lora_parameters(unet: Any) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def _tuner_layers(unet: Any) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (m for m in unet.modules() if isinstance(m, BaseTunerLayer))


def set_adapters_enabled(unet: Any, enabled: bool) -> None:
    if _has_mixin(unet):
        (unet.enable_adapters if enabled else unet.disable_adapters)()
    else:
        for layer in _tuner_layers(unet):
            layer.enable_adapters(enabled)


@contextmanager
def adapters_disabled(unet: Any) -> Iterator[None]:
    """The base UNet's prediction from the same module: LoRA off inside, back on afterwards (even on error)."""
    set_adapters_enabled(unet, False)
    try:
        yield
    finally:
        set_adapters_enabled(unet, True)


def save_lora(unet: Any, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` (diffusers' layout) and ``lora.json`` (rank, targets)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if _has_mixin(unet):
        unet.save_lora_adapter(str(folder), weight_name=LORA_FILE)
    else:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(state, str(folder / LORA_FILE))
    config = unet.peft_config["default"] if hasattr(unet, "peft_config") else None
    info = {"rank": config.r, "alpha": config.lora_alpha, "targets": sorted(config.target_modules)} if config else {}
    (folder / "lora.json").write_text(json.dumps({**info, **(metadata or {})}, indent=1, sort_keys=True))
    return folder / LORA_FILE


def load_lora(unet: Any, folder: str | Path) -> None:
    """Put the LoRA saved by :func:`save_lora` on ``unet`` (safetensors only: nothing is unpickled)."""
    folder = Path(folder)
    file = folder / LORA_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no LoRA weights at {file}; pass the folder `iqabench train acpo` wrote")
    info = json.loads((folder / "lora.json").read_text()) if (folder / "lora.json").is_file() else {}
    from iqabench.io.safe_load import load_tensors

    state = load_tensors(file)  # a damaged or planted file is refused in one sentence naming it
    if _has_mixin(unet):
        unet.load_lora_adapter(state, prefix=None, adapter_name="default")
        return
    from peft import set_peft_model_state_dict

    add_lora(unet, int(info.get("rank", 4)), info.get("alpha"), info.get("targets", DEFAULT_TARGETS))
    result = set_peft_model_state_dict(unet, state)
    if getattr(result, "unexpected_keys", None):
        raise UserInputError(f"{file} does not fit this UNet (unexpected keys {result.unexpected_keys[:3]})")
