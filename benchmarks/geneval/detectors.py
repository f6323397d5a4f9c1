"""Pluggable object detectors for GenEval: class name -> detections (box, confidence, mask) of one image.

* ``mask2former`` (official): mmdetection's Mask2Former Swin-S COCO, used only
  when ``mmdet`` is installed and the checkpoint file is present. Published
  GenEval numbers come from this model.
* ``maskrcnn``: torchvision's Mask R-CNN ResNet-50-FPN v2 (COCO). Lighter and
  pip-installable, but a different detector: its numbers are NOT comparable with
  published GenEval scores, and the report says so.
* ``weights=random``: the Mask R-CNN architecture with seeded random weights,
  for weights-free smoke runs (it detects next to nothing; numbers mean nothing).

Detectors return every detection with its raw confidence; thresholds, ordering
and de-duplication are :func:`rules.filter_detections`' job, as officially.
Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors,
never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from iqabench.contracts.errors import UserInputError

from .clip import RANDOM, WeightsUnavailableError
from .layout import load_object_names
from .rules import Detection

MASK2FORMER_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
MASK2FORMER_CONFIG = "configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"
MASKRCNN_CHECKPOINT = "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
DETECTORS = ("mask2former", "maskrcnn")
# torchvision's COCO names that GenEval's object_names.txt spells differently.
_TORCHVISION_RENAMES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}


class Detector(Protocol):
    name: str
    fingerprint: str
    comparable: bool  # True only for the official detector with its real weights
    random: bool

    def detect(self, image: Image.Image, path: str | None = None) -> dict[str, list[Detection]]: ...


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from iqabench.io.safe_load import load_tensors

    state = load_tensors(path)  # safetensors or a plain-tensor file; anything else refused in one sentence
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserInputError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


class TorchvisionMaskRCNN:
    """torchvision Mask R-CNN v2 with its COCO labels mapped onto GenEval's 80 class names."""

    def __init__(self, weights: str = "pretrained", device: str | torch.device = "cpu", seed: int = 0,
                 min_size: int = 800, max_size: int = 1333, **model_kwargs: Any):
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, maskrcnn_resnet50_fpn_v2

        categories = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"]
        self.labels = {i: _TORCHVISION_RENAMES.get(c, c) for i, c in enumerate(categories)
                       if c not in ("__background__", "N/A")}
        missing = set(load_object_names()) - set(self.labels.values())
        if missing:  # pragma: no cover - guards a torchvision label change
            raise RuntimeError(f"torchvision's COCO labels lack GenEval classes {sorted(missing)}")
        self.device = torch.device(device)
        self.random = weights == RANDOM
        self.comparable = False
        self.name = "maskrcnn"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91,
                                             min_size=min_size, max_size=max_size, box_score_thresh=0.05,
                                             **model_kwargs)
        if self.random:
            extra = sorted(model_kwargs.items())
            self.fingerprint = f"torchvision-maskrcnn-v2/random-seed={seed}/min_size={min_size}/{extra}"
        else:
            path = (Path(torch.hub.get_dir()) / "checkpoints" / MASKRCNN_CHECKPOINT if weights == "pretrained"
                    else Path(weights).expanduser())
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"Mask R-CNN weights {path.name} not found at {path}; download "
                    "torchvision's MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1 on a connected machine (it lands in "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints'}), or pass --option detector_weights=PATH, or "
                    "--option weights=random for a weights-free smoke run")
            model.load_state_dict(_load_state_dict(path))
            self.fingerprint = f"torchvision-maskrcnn-v2/{path.name}/min_size={min_size}"
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def detect(self, image: Image.Image, path: str | None = None) -> dict[str, list[Detection]]:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1).to(self.device)
        out = self.model([tensor])[0]
        found: dict[str, list[Detection]] = {}
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy() if "masks" in out else None
        for i, (box, label, score) in enumerate(zip(out["boxes"].tolist(), out["labels"].tolist(),
                                                    out["scores"].tolist(), strict=True)):
            name = self.labels.get(int(label))
            if name is None:
                continue
            found.setdefault(name, []).append(
                Detection(tuple(box), float(score), None if masks is None else masks[i]))
        return found


class MMDetMask2Former:
    """The official detector through mmdetection (2.x or 3.x), loaded from a local checkpoint only."""

    def __init__(self, checkpoint: str | None = None, config: str | None = None, device: str | torch.device = "cpu"):
        try:
            import mmdet
            from mmdet.apis import init_detector
        except ImportError:
            raise WeightsUnavailableError(
                "the official GenEval detector needs mmdetection, which is not installed; install mmdet (with "
                "mmcv) as in the GenEval README, or use --option detector=maskrcnn (not comparable with published "
                "numbers), or --option weights=random for a weights-free smoke run") from None
        default_dir = Path.home() / ".cache" / "iqabench" / "geneval"
        path = Path(checkpoint).expanduser() if checkpoint else default_dir / MASK2FORMER_CHECKPOINT
        if not path.is_file():
            raise WeightsUnavailableError(
                f"Mask2Former checkpoint {path.name} not found at {path}; download it with GenEval's "
                f"evaluation/download_models.sh into {default_dir} or pass --option detector_weights=PATH")
        config = config or str(Path(mmdet.__file__).parent.parent / MASK2FORMER_CONFIG)
        self.model = init_detector(config, None, device=str(device))
        # Non-strict as mmcv's load_checkpoint, but a checkpoint that fits no part of the model (another
        # config, a key prefix) must not leave a randomly initialised detector reporting "comparable" numbers.
        incompatible = self.model.load_state_dict(_load_state_dict(path), strict=False)
        n_model = len(self.model.state_dict())
        if n_model and len(incompatible.missing_keys) > n_model / 2:
            raise ValueError(
                f"{path.name} does not fit the Mask2Former config {config}: {len(incompatible.missing_keys)} of the "
                f"model's {n_model} weights are missing from it (e.g. {incompatible.missing_keys[0]!r}); pass the "
                "checkpoint GenEval's evaluation/download_models.sh fetches")
        self.missing_keys = list(incompatible.missing_keys)
        self.names = load_object_names()
        self.name = "mask2former"
        self.fingerprint = f"mmdet-{mmdet.__version__}/{path.name}"
        self.comparable = True
        self.random = False

    def detect(self, image: Image.Image, path: str | None = None) -> dict[str, list[Detection]]:
        from mmdet.apis import inference_detector

        # mmdet reads files itself (BGR); pass the file path as the official script does.
        if path is None:
            raise ValueError("the mmdet detector needs the image's file path")
        result = inference_detector(self.model, path)
        found: dict[str, list[Detection]] = {}
        if hasattr(result, "pred_instances"):  # mmdet 3.x
            inst = result.pred_instances
            masks = inst.masks.cpu().numpy() if hasattr(inst, "masks") else None
            for i, (box, score, label) in enumerate(zip(inst.bboxes.tolist(), inst.scores.tolist(),
                                                        inst.labels.tolist(), strict=True)):
                found.setdefault(self.names[label], []).append(
                    Detection(tuple(box), score, None if masks is None else masks[i]))
            return found
        bbox = result[0] if isinstance(result, tuple) else result  # mmdet 2.x: per-class arrays [N, 5]
        segm = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        for index, name in enumerate(self.names):
            for j, row in enumerate(np.asarray(bbox[index]).reshape(-1, 5)):
                mask = None if segm is None else np.asarray(segm[index][j], dtype=bool)
                found.setdefault(name, []).append(Detection(tuple(row[:4].tolist()), float(row[4]), mask))
        return found


def build_detector(name: str | None = None, weights: str = "pretrained", device: str | torch.device = "cpu",
                   seed: int = 0, **kwargs: Any) -> Detector:
    """``name`` mask2former (official, default) or maskrcnn; ``weights`` pretrained, a path, or random."""
    name = name or ("maskrcnn" if weights == RANDOM else "mask2former")
    if name not in DETECTORS:
        raise UserInputError(f"unknown GenEval detector {name!r}; choose one of {', '.join(DETECTORS)}")
    if name == "mask2former":
        if weights == RANDOM:
            raise UserInputError("a random-weight Mask2Former is not offered; use --option detector=maskrcnn "
                                 "with --option weights=random for a weights-free smoke run")
        return MMDetMask2Former(None if weights == "pretrained" else weights, kwargs.get("config"), device)
    if weights == RANDOM:  # small inputs and few proposals: a random RPN keeps 1000 boxes, slow on a CPU
        kwargs.setdefault("min_size", 128)
        kwargs.setdefault("max_size", 256)
        kwargs.setdefault("rpn_pre_nms_top_n_test", 50)
        kwargs.setdefault("rpn_post_nms_top_n_test", 20)
        kwargs.setdefault("box_detections_per_img", 20)
    return TorchvisionMaskRCNN(weights, device, seed, **{k: v for k, v in kwargs.items() if k != "config"})
