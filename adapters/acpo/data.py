"""(image, caption) rows for ACPO's L_mse term, read with the IQA-Adapter dataset reader (folders, CSV/JSONL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqabench.contracts.errors import UserInputError

from ..iqa_adapter.dataset import center_crop_resize, read_records


class ImageCaptionDataset:
    """Rows ``{"pixel_values": [3, R, R] in [-1, 1], "caption": str}``, center-cropped to ``resolution``."""

    def __init__(self, source: str | Path, resolution: int = 512):
        self.records = read_records(source)
        if not self.records:
            raise UserInputError(f"no images found in {source}")
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        image = center_crop_resize(record.open(), self.resolution)[0]
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        return {"pixel_values": pixels, "caption": record.caption}
