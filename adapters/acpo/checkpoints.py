"""ACPO ``checkpoint-N/`` folders: LoRA (safetensors), optimizer state (tensors only) and ``state.json``.

The optimizer file is written with ``torch.save`` of a plain state dict and read back with
``weights_only=True``: nothing is unpickled beyond tensors and numbers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from iqabench.io import checkpoints

from .config import AcpoConfig
from .lora import LORA_FILE, save_lora


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    return checkpoints.latest_checkpoint(output_dir, (LORA_FILE, "state.json"))


def metadata(config: AcpoConfig, step: int) -> dict[str, Any]:
    """What ``lora.json`` records besides rank/targets: the base spec, the step and the whole config."""
    return {"base": config.base, "step": step, "acpo": asdict(config)}


def save_checkpoint(accelerator: Any, unet: Any, optimizer: Any, out: Path, step: int,
                    history: list[dict[str, float]], config: AcpoConfig) -> Path:
    """Write ``checkpoint-<step>`` atomically (a temporary folder renamed), on the main process only."""
    folder = out / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_lora(accelerator.unwrap_model(unet), tmp, metadata(config, step))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    accelerator.wait_for_everyone()
    return folder


def resume(unet: Any, optimizer: Any, folder: Path) -> tuple[int, list[dict[str, float]]]:
    """Load LoRA and optimizer state from ``folder``; returns (step, loss history)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(unet, load_file(str(folder / LORA_FILE)), adapter_name="default")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), list(state.get("history", []))
