"""An ``IQABENCH_ADAPTER_DIR`` holding every IQA-Adapter preset's file in the authors' released layout.

The release (X1716/IQA-Adapter) ships IP-Adapter-style ``.bin`` files: one
``torch.save`` of ``{"image_proj": {...}, "ip_adapter": {"<index>.to_k_ip.weight": ...}}``
with no metadata (the preset table supplies metrics and base). The loader
checks the tensors against the base UNet (token width = cross-attention width,
one ``to_k_ip``/``to_v_ip`` pair per cross-attention layer), so the files are
sized for the mirror's scaled-down SDXL UNet, built from the preset's own
settings (metrics, token count, projection) with random weights.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def released_layout(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``image_proj.x`` / ``ip_adapter.x`` flat keys -> the release's two nested dicts."""
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        group, _, rest = key.partition(".")
        nested[group][rest] = value.detach().clone().contiguous()
    return nested


def write_adapter_dir(folder: Path, seed: int = 0) -> dict[str, Path]:
    """One ``<file_stem>.bin`` per preset in ``folder``; preset name -> file."""
    from iqabench.adapters.iqa_adapter.adapter import AdapterConfig, IQAAdapter
    from iqabench.adapters.iqa_adapter.checkpoint import PRESETS
    from iqabench.support import tiny_models

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, (name, preset) in enumerate(sorted(PRESETS.items())):
        torch.manual_seed(seed * 1000 + index)
        config = AdapterConfig(tuple(preset.metrics), n_tokens=preset.n_tokens, projection=preset.projection,
                               base=preset.base)
        unet = tiny_models._sdxl_unet(seed)  # the mirror's SDXL UNet; the adapter installs processors on it
        adapter = IQAAdapter(config, unet, init_from_base=False)
        payload = released_layout(adapter.released_state_dict())
        path = folder / f"{preset.file_stem}.bin"
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
        os.close(handle)
        torch.save(payload, tmp)
        os.replace(tmp, path)
        written[name] = path
    return written
