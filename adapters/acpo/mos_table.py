"""Image/MOS tables for stage 1: a CSV (or Parquet) with one row per image: ``path``, ``prompt``, ``score``.

Paths are relative to the table's folder unless absolute. Images are read lazily, one batch at a time, so a
30,000-image table (AIGCQA-30K) does not have to fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iqabench.contracts.errors import UserInputError

COLUMNS = ("path", "prompt", "score")


@dataclass
class MosTable:
    paths: list[Path]
    prompts: list[str]
    scores: torch.Tensor  # [N] float32

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, index: list[int] | range, size: int) -> torch.Tensor:
        """[len(index), 3, size, size] in [0, 1] (bicubic resize of the whole image, as CLIP's preprocessing)."""
        from PIL import Image

        out = []
        for i in index:
            with Image.open(self.paths[i]) as image:
                rgb = image.convert("RGB").resize((size, size), Image.BICUBIC)
            out.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1))
        return torch.stack(out)


def read_mos_table(path: str | Path, path_column: str = "path", prompt_column: str | None = "prompt",
                   score_column: str = "score") -> MosTable:
    """Read and check the table: every column present, every score a finite number, every image file there.

    ``prompt_column=None`` reads no prompts (the two-stream network does not use them).
    """
    import pandas as pd

    table_path = Path(path)
    if not table_path.is_file():
        raise FileNotFoundError(f"no MOS table at {table_path}")
    table = pd.read_parquet(table_path) if table_path.suffix == ".parquet" else pd.read_csv(table_path)
    missing = [c for c in (path_column, prompt_column, score_column) if c is not None and c not in table.columns]
    if missing:
        raise UserInputError(f"{table_path} lacks column(s) {missing}; it has {list(table.columns)} "
                             f"(expected {', '.join(COLUMNS)})")
    if table.empty:
        raise UserInputError(f"{table_path} has no rows")
    scores = pd.to_numeric(table[score_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise UserInputError(f"{table_path}: row {int(bad[0]) + 2} has a score that is not a number "
                             f"({table[score_column].iloc[int(bad[0])]!r})")
    paths = [Path(p) if Path(p).is_absolute() else table_path.parent / str(p) for p in table[path_column]]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} image(s) of {table_path} are missing, e.g. {absent[0]}")
    column = table[prompt_column] if prompt_column is not None else [""] * len(table)
    prompts = ["" if isinstance(p, float) and np.isnan(p) else str(p) for p in column]
    return MosTable(paths, prompts, torch.tensor(scores, dtype=torch.float32))
