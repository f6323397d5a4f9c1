"""Reference Inception statistics as a file: mu, sigma and the feature count, in the torch-fidelity / clean-fid format.

FID against a large real set (the IQA-Adapter paper's Table 5 "FID-Full" is against the full MS-COCO training
set, ~118k images) needs only the mean and covariance of its 2048-d Inception pool features. torch-fidelity
caches them as ``np.savez_compressed(path, mu=..., sigma=...)`` and clean-fid / pytorch-fid write the same two
arrays, so a ``.npz`` with ``mu`` [D] and ``sigma`` [D, D] is read from any of them. The files this module writes
add ``num_features`` (how many images the statistics summarise), ``extractor`` (our Inception fingerprint) and
``inception_sha256`` (the SHA-256 of the Inception weights file, empty for random weights), so a run can refuse
statistics that came from other weights. Files are read with ``allow_pickle=False``: nothing is unpickled.

``iqabench fid-stats build <folder|csv>`` writes one (:func:`build_statistics` + :func:`save_statistics`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iqabench.contracts.errors import UserInputError

FEATURE_DIM = 2048


@dataclass(frozen=True)
class ReferenceStatistics:
    """mu [D], sigma [D, D] of a reference set's Inception pool features, with their provenance."""

    mu: np.ndarray
    sigma: np.ndarray
    num_features: int | None  # None: the file (e.g. a plain clean-fid one) does not say
    extractor: str = ""
    inception_sha256: str = ""
    path: str = ""

    def as_torch_fidelity(self) -> dict[str, np.ndarray]:
        """The dict ``torch_fidelity.metric_fid.fid_statistics_to_metric`` takes."""
        return {"mu": self.mu, "sigma": self.sigma}


def statistics_from_features(features: torch.Tensor, extractor: str = "", inception_sha256: str = "") -> \
        ReferenceStatistics:
    """torch-fidelity's own ``fid_features_to_statistics`` on [N, D] pool features, with their count."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    if features.dim() != 2 or len(features) < 2:
        raise UserInputError(f"reference statistics need at least 2 feature rows, got shape {list(features.shape)}")
    stats = fid_features_to_statistics(features.float().cpu())
    return ReferenceStatistics(stats["mu"], stats["sigma"], len(features), extractor, inception_sha256)


def save_statistics(stats: ReferenceStatistics, path: str | Path) -> Path:
    """Write ``stats`` as a compressed .npz (``mu``, ``sigma`` as torch-fidelity names them, plus provenance)."""
    from iqabench.store.atomic_io import atomic_write_bytes

    path = Path(path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mu=stats.mu, sigma=stats.sigma, num_features=np.int64(stats.num_features or -1),
                        extractor=np.array(stats.extractor), inception_sha256=np.array(stats.inception_sha256))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_statistics(path: str | Path) -> ReferenceStatistics:
    """Read a torch-fidelity / clean-fid / pytorch-fid / iqabench ``.npz``; bad files get one sentence."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} do not exist; write them with `iqabench fid-stats "
                                "build <image folder or caption,image CSV> --out stats.npz`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:  # an object array (pickled) or not a .npz at all
        raise UserInputError(f"reference statistics {path} are not a plain .npz of arrays ({exc}); nothing was "
                         "unpickled") from None
    except OSError as exc:
        raise UserInputError(f"reference statistics {path} cannot be read as .npz ({exc})") from None
    mu, sigma = arrays.get("mu"), arrays.get("sigma")
    if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserInputError(f"reference statistics {path} need arrays 'mu' [D] and 'sigma' [D, D] (torch-fidelity / "
                         f"clean-fid layout); found {', '.join(f'{k} {list(v.shape)}' for k, v in arrays.items())}")
    count = int(arrays["num_features"]) if "num_features" in arrays else -1
    return ReferenceStatistics(mu, sigma, count if count > 0 else None, str(arrays.get("extractor", "")),
                               str(arrays.get("inception_sha256", "")), str(path))


def check_compatible(stats: ReferenceStatistics, extractor: str, inception_sha256: str) -> None:
    """Refuse statistics made with other Inception weights than the run's (when the file records which)."""
    if len(stats.mu) != FEATURE_DIM:
        raise UserInputError(f"reference statistics {stats.path} have {len(stats.mu)}-d features; fid-topk compares "
                         f"{FEATURE_DIM}-d Inception pool features")
    if stats.inception_sha256 and inception_sha256 and stats.inception_sha256 != inception_sha256:
        raise UserInputError(f"reference statistics {stats.path} were made with Inception weights sha256 "
                         f"{stats.inception_sha256[:12]}..., the run uses {inception_sha256[:12]}...: rebuild them "
                         "with `iqabench fid-stats build` and the run's weights")
    if stats.extractor and stats.extractor != extractor and not (stats.inception_sha256 and inception_sha256):
        raise UserInputError(f"reference statistics {stats.path} come from extractor {stats.extractor!r}, the run uses "
                         f"{extractor!r}: rebuild them with `iqabench fid-stats build` and the run's weights")


def fid_against(features: torch.Tensor, stats: ReferenceStatistics) -> float:
    """torch-fidelity's Frechet distance between [N, D] features and precomputed statistics.

    torch-fidelity asserts equal dtypes; a file with float64 ``mu`` (pytorch-fid writes them) is compared with
    both sides in float64, otherwise both stay as torch-fidelity makes them (float32 mu, float64 sigma).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if len(features) < 2:
        raise UserInputError(f"FID needs at least 2 images, got {len(features)}")
    mine = fid_features_to_statistics(features)
    theirs = stats.as_torch_fidelity()
    for key in ("mu", "sigma"):
        if mine[key].dtype != theirs[key].dtype:
            mine[key], theirs[key] = mine[key].astype(np.float64), theirs[key].astype(np.float64)
    return float(fid_statistics_to_metric(mine, theirs, verbose=False)[KEY_METRIC_FID])


def build_statistics(source: str | Path, weights: str = "pretrained", device: str = "cpu",
                     batch_size: int = 16) -> ReferenceStatistics:
    """Inception statistics of every image of a folder or caption,image CSV/TSV/JSONL (any size)."""
    from PIL import Image

    from .features import InceptionFeatures, split
    from .references import load_reference

    pairs = load_reference(source)
    extractor = InceptionFeatures(weights, device, batch_size=batch_size)
    rows = []
    for start in range(0, len(pairs), batch_size):
        images = []
        for pair in pairs[start:start + batch_size]:
            with Image.open(pair.image) as image:
                images.append(image.convert("RGB"))
        by_size: dict[tuple[int, int], list[Image.Image]] = {}
        for image in images:
            by_size.setdefault(image.size, []).append(image)
        rows.extend(extractor._extract(group) for group in by_size.values())
    pool, _ = split(np.concatenate(rows))
    return statistics_from_features(pool, extractor.fingerprint, extractor.weights_sha256)
