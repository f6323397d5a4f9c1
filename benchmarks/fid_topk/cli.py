"""``iqabench fid-stats build <folder|csv> --out stats.npz``: a reference set's Inception statistics, written once.

The file (mu, sigma in torch-fidelity / clean-fid layout, plus the image count and the Inception weights' hash)
is what ``iqabench run fid-topk --option reference_stats=stats.npz`` compares against, e.g. the full MS-COCO
training set of the IQA-Adapter paper's Table 5. The work is in :mod:`.stats`. Mounted by the GenEval / FID
plugin's ``iqabench.cli`` entry point (``benchmarks/geneval/cli.py``), so no new entry point is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iqabench.cli.common import out_console
from iqabench.contracts.errors import UserInputError

fid_stats_app = typer.Typer(help="Reference Inception statistics for fid-topk (FID against a large real set).",
                            no_args_is_help=True)


@fid_stats_app.command("build")
def build_command(
    source: Annotated[str, typer.Argument(help="image folder, or CSV/TSV/JSONL of caption,image pairs (any size)")],
    out: Annotated[Path, typer.Option("--out", help="the .npz to write (mu, sigma, num_features, hash)")],
    weights: Annotated[str, typer.Option("--weights", help="pretrained (torch-fidelity's Inception in torch hub), "
                                         "random (weights-free smoke test) or a weights file")] = "pretrained",
    device: Annotated[str, typer.Option("--device")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
) -> None:
    """Extract torch-fidelity Inception features of every image and write their mean and covariance."""
    from iqabench.execution.runtime import Runtime

    from .stats import build_statistics, save_statistics

    if out.suffix != ".npz":
        raise UserInputError(f"--out {out} must end in .npz (the torch-fidelity / clean-fid statistics format)")
    stats = build_statistics(source, weights, Runtime(device=device).device, batch_size)
    path = save_statistics(stats, out)
    weights = f", weights sha256 {stats.inception_sha256}" if stats.inception_sha256 else ""
    out_console.print(f"wrote {path}: {stats.num_features} images, {len(stats.mu)}-d features, extractor "
                      f"{stats.extractor}{weights}", highlight=False, markup=False, soft_wrap=True)


def mount(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    """Adds ``iqabench fid-stats build``."""
    app.add_typer(fid_stats_app, name="fid-stats")
