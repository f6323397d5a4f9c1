"""Inception features through torch-fidelity, cached per image in the Store, and FID / IS / KID from them.

The feature extractor is torch-fidelity's own ``FeatureExtractorInceptionV3``
(the TF-ported Inception with TF-1.x bilinear resizing), and the numbers come
from torch-fidelity's own functions on the features (``fid_features_to_statistics``
+ ``fid_statistics_to_metric``, ``isc_features_to_metric``,
``kid_features_to_metric``): nothing is reimplemented. Two deviations, both
about loading:

* torch-fidelity reads a local ``feature_extractor_weights_path`` with
  ``torch.load(weights_only=False)``, i.e. it unpickles the file. We read the
  file ourselves with ``weights_only=True`` (or safetensors) and hand the state
  dict to the same class through its own loading hook, so no file is unpickled.
* ``weights=random`` keeps the class's random initialisation (seeded) for
  weights-free smoke runs.

Features (2048-d pool features for FID/KID, 1008-d unbiased logits for IS) are
stored per image as raw float32 bytes in the Store's blob table under
(image key, extractor fingerprint): the top-k subsets reuse them, and a second
run with another generator extracts only its own images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from PIL import Image

from iqabench.contracts.errors import UserInputError
from iqabench.execution.batching import BatchPolicy, run_batched
from iqabench.store.store import Store, content_key

from ..geneval.clip import RANDOM, WeightsUnavailableError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
FEATURES = ("2048", "logits_unbiased")
DIMS = {"2048": 2048, "logits_unbiased": 1008}
_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], torch.nn.Module] = {}  # the last built extractor, reused by later runs in-process


def _extractor_class():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class LocalInceptionV3(FeatureExtractorInceptionV3):
        """torch-fidelity's extractor, fed a state dict loaded without unpickling (or kept random)."""

        _state: dict[str, torch.Tensor] | None = None

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            if type(self)._state is None:  # weights=random: keep the (seeded) initialisation
                return None
            return super().load_state_dict(type(self)._state, strict=strict)

    return LocalInceptionV3


def _signal_preserving_init(model: torch.nn.Module) -> None:
    """He-normal convolutions: PyTorch's default init shrinks activations ~3x per layer, so after Inception's
    ~20 conv layers every random feature is ~0 and smoke-run FIDs would all read 0 instead of exercising the maths."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.in_features ** -0.5)


def default_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from iqabench.io.safe_load import load_tensors

    return load_tensors(path)  # safetensors or a plain-tensor file; anything else refused in one sentence


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file (torch hub names torch-fidelity's file after its first 8 hex digits)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_path(weights: str) -> Path:
    path = default_inception_path() if weights == "pretrained" else Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Inception weights {path.name} not found at {path}; download torch-fidelity's "
            f"{INCEPTION_FILE} on a connected machine into {path.parent}, or pass "
            "--option inception_weights=PATH, or --option weights=random for a weights-free smoke run")
    return path


def inception_identity(weights: str = "pretrained", seed: int = 0) -> tuple[str, str]:
    """(extractor fingerprint, SHA-256 of the weights file or "" for random weights), without loading the network:
    what reference statistics record and what a run checks them against before generating."""
    if weights == RANDOM:
        return f"torch-fidelity-inception-v3/random-seed={seed}", ""
    path = _weights_path(weights)
    return f"torch-fidelity-inception-v3/{path.name}", file_sha256(path)


class InceptionFeatures:
    """Extracts and caches torch-fidelity Inception features for Store images."""

    def __init__(self, weights: str = "pretrained", device: str | torch.device = "cpu", seed: int = 0,
                 batch_size: int = 16, policy: BatchPolicy | None = None):
        self.device = torch.device(device)
        #: the run's batch policy (``--batch-size``, ``auto``, out-of-memory back-off); else a fixed ``batch_size``
        self.policy = policy if policy is not None else BatchPolicy(batch_size)
        self.random = weights == RANDOM
        self.fingerprint, self.weights_sha256 = inception_identity(weights, seed)
        state = None if self.random else _read_weights(_weights_path(weights))
        self._state, self._seed = state, seed
        self._model = None
        self.n_extracted = 0  # images run through the network (cache misses), for the cache benchmark

    def model(self):
        if self._model is None and (self.fingerprint, str(self.device)) in _MODELS:
            self._model = _MODELS[(self.fingerprint, str(self.device))]
        if self._model is None:
            cls = _extractor_class()
            import torch_fidelity.feature_extractor_inceptionv3 as module

            with _LOCK, torch.random.fork_rng(devices=[]), \
                    mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: {}):
                torch.manual_seed(self._seed)
                cls._state = self._state
                model = cls("inception-v3-compat", list(FEATURES))
                if self._state is None:
                    _signal_preserving_init(model)
                self._model = model.to(self.device).eval()
                _MODELS.clear()  # keep one network in memory: a run uses one extractor
                _MODELS[(self.fingerprint, str(self.device))] = self._model
        return self._model

    def _key(self, image_key: str) -> str:
        return content_key("fid-features/v1", self.fingerprint, image_key)

    @torch.no_grad()
    def _extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        batch = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
                             for im in images])
        outputs = self.model()(batch.to(self.device))
        return torch.cat([o.float().cpu() for o in outputs], dim=1).numpy()

    def features(self, store: Store, keys: Sequence[str],
                 load: Callable[[str], Image.Image] | None = None) -> dict[str, np.ndarray]:
        """[2048 + 1008] float32 features per image key, from the cache or extracted (and cached) now."""
        load = load or store.load_image
        width = sum(DIMS.values())
        out: dict[str, np.ndarray] = {}
        todo = []
        for key in dict.fromkeys(keys):
            blob = store.get_blob(self._key(key))
            if blob is not None and len(blob) == width * 4:
                out[key] = np.frombuffer(blob, dtype=np.float32)
            else:
                todo.append(key)

        def extract(chunk: list[str]) -> list[str]:
            images = [load(k) for k in chunk]
            # Inception resizes every image to 299 itself; stacking needs one size per batch.
            groups: dict[tuple[int, int], list[int]] = {}
            for i, im in enumerate(images):
                groups.setdefault(im.size, []).append(i)
            for members in groups.values():
                feats = self._extract([images[i] for i in members])
                for i, row in zip(members, feats, strict=True):
                    row = np.ascontiguousarray(row, dtype=np.float32)
                    store.put_blob(self._key(chunk[i]), f"float32[{width}]", row.tobytes())
                    out[chunk[i]] = row
            self.n_extracted += len(chunk)
            return chunk

        run_batched(todo, extract, self.policy)
        return out


def split(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool features [N, 2048], unbiased logits [N, 1008]) from stacked cached rows."""
    t = torch.from_numpy(np.asarray(features, dtype=np.float32))
    return t[:, : DIMS["2048"]], t[:, DIMS["2048"]:]


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """torch-fidelity's Frechet distance between two feature sets, exactly as its own pipeline computes it."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if len(features_a) < 2 or len(features_b) < 2:
        raise UserInputError(f"FID needs at least 2 images per set, got {len(features_a)} and {len(features_b)}")
    stats_a = fid_features_to_statistics(features_a)
    stats_b = fid_features_to_statistics(features_b)
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


def fid_bootstrap_ci(features: torch.Tensor, reference: torch.Tensor, n_resamples: int, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of FID over the generated images (resampled with replacement; the reference
    statistics computed once and held fixed), each resample through torch-fidelity's own FID functions.

    Cost: one mean/covariance and one 2048-d matrix square root per resample (the reason it is opt-in).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    ref_stats = fid_features_to_statistics(reference)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        pick = torch.from_numpy(rng.integers(0, len(features), len(features)))
        stats = fid_features_to_statistics(features[pick])
        draws.append(float(fid_statistics_to_metric(stats, ref_stats, verbose=False)[KEY_METRIC_FID]))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(draws), [alpha, 1.0 - alpha])
    return float(low), float(high)


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's Inception Score (mean, std over splits) from unbiased logits."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    splits = max(1, min(splits, len(logits)))
    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


def kid(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity's Kernel Inception Distance (mean, std over subsets); subset size capped at the set sizes."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features_a), len(features_b))
    if size < 2:
        raise UserInputError("KID needs at least 2 images per set")
    kwargs: dict[str, Any] = {"kid_subsets": subsets, "kid_subset_size": size, "rng_seed": seed, "verbose": False}
    out = kid_features_to_metric(features_a, features_b, **kwargs)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])
