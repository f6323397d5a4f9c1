"""What a GenEval run loads after generation (detector, mmdetection, CLIP), declared before any image is made.

The official evaluation needs mmdetection and its Mask2Former checkpoint; without them the run would make every
image (hours for SDXL x 553 prompts x 4 seeds) and only then fail. The preflight lists these with the generators'
and metrics' files, in one table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from iqabench.contracts.needs import Need, open_clip_needs

from .clip import RANDOM

#: GenEval's evaluation/download_models.sh fetches this file and saves it under MASK2FORMER_CHECKPOINT.
MASK2FORMER_URL = ("https://download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_"
                   "50e_coco/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth")
#: torchvision's MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1 (the non-official detector=maskrcnn).
MASKRCNN_URL = "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"


def _torch_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_need(what: str, path: Path, url: str | None, how: str) -> Need:
    present = path.is_file()
    return Need(what, path, "url" if url else "manual", url or how, present,
                size=path.stat().st_size if present else None,
                message=f"{what} {path.name} is not at {path}; {how}")


def detector_needs(detector: str, weights: str) -> list[Need]:
    """mmdetection (a package fetch cannot install) and the detector checkpoint, unless weights are random."""
    if weights == RANDOM:
        return []
    from .detectors import MASK2FORMER_CHECKPOINT, MASKRCNN_CHECKPOINT

    if detector == "maskrcnn":
        path = _torch_checkpoints() / MASKRCNN_CHECKPOINT if weights == "pretrained" else Path(weights).expanduser()
        return [_file_need("Mask R-CNN detector", path, MASKRCNN_URL if weights == "pretrained" else None,
                           "pass --option detector_weights=PATH")]
    mmdet = importlib.util.find_spec("mmdet") is not None
    needs = [Need("mmdetection (GenEval's official detector)", Path("mmdet"), "package",
                  "pip install mmdet mmcv (as in the GenEval README)", mmdet,
                  message="the official GenEval detector needs mmdetection, which is not installed")]
    default = Path.home() / ".cache" / "iqabench" / "geneval" / MASK2FORMER_CHECKPOINT
    path = default if weights == "pretrained" else Path(weights).expanduser()
    needs.append(_file_need("Mask2Former detector", path, MASK2FORMER_URL if weights == "pretrained" else None,
                            "pass --option detector_weights=PATH"))
    return needs


def clip_needs(arch: str, pretrained: str, weights: str) -> list[Need]:
    """open_clip's pretrained file in the Hugging Face cache (or the user's file), unless weights are random."""
    if weights == RANDOM:
        return []
    if weights != "pretrained":
        return [_file_need(f"CLIP {arch} weights", Path(weights).expanduser(), None, "pass an existing file")]
    return open_clip_needs(arch, pretrained)
