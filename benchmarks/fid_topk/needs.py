"""What an fid-topk run loads after generation (Inception, CLIP, the reference set), declared before any work."""

from __future__ import annotations

from pathlib import Path

from iqabench.contracts.needs import Need

from ..geneval.clip import RANDOM
from ..geneval.needs import _file_need, clip_needs


def inception_need(weights: str) -> list[Need]:
    """torch-fidelity's Inception file in torch hub's checkpoints (its own ``load_state_dict_from_url`` target)."""
    if weights == RANDOM:
        return []
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from .features import default_inception_path

    if weights != "pretrained":
        return [_file_need("Inception weights", Path(weights).expanduser(), None, "pass an existing file")]
    return [_file_need("torch-fidelity Inception", default_inception_path(), URL_INCEPTION_V3,
                       "download torch-fidelity's Inception weights on a connected machine")]


def fid_topk_needs(opts: dict) -> list[Need]:
    reference = Path(opts["reference"]).expanduser()
    needs = [Need("reference images", reference, "manual", "your own image folder or CSV (--option reference=)",
                  reference.exists(), message=f"reference {reference} does not exist")]
    return [*needs, *inception_need(opts["inception_weights"]),
            *clip_needs(opts["clip_arch"], opts["clip_pretrained"], opts["clip_weights"])]
