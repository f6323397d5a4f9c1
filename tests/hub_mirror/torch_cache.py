"""torch hub checkpoints (``$TORCH_HOME/hub/checkpoints``) with random weights at their real architectures.

Both loaders here check every shape (``load_state_dict`` is strict), so the
files hold the full architectures under their released file names:

* torch-fidelity's Inception (``weights-inception-2015-12-05-6726825d.pth``,
  the name its ``load_state_dict_from_url`` caches under): the state dict of
  ``FeatureExtractorInceptionV3`` itself, about 95 MB;
* torchvision's ``MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1``
  (``maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth``), about 185 MB.

Random weights detect nothing a rule would accept, so GenEval's colour step
would never run. The mirror's detector therefore keeps random weights
everywhere except its box classifier, whose bias makes every proposal a
``DETECTED_CLASS`` with high confidence: GenEval then finds that object and
asks CLIP for its colour, on the real code path. The numbers still mean
nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import torch

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
MASKRCNN_FILE = "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
#: The COCO class every proposal of the mirror's detector is given (torchvision's label name).
DETECTED_CLASS = "car"


def checkpoints_dir(torch_home: Path) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches files when ``TORCH_HOME`` is ``torch_home``."""
    return Path(torch_home) / "hub" / "checkpoints"


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    """``torch.save`` of a plain tensor dict (what the releases are), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def write_inception(torch_home: Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception file: the extractor's own state dict (its init, He-scaled so features vary)."""
    import torch_fidelity.feature_extractor_inceptionv3 as module

    cls = module.FeatureExtractorInceptionV3
    torch.manual_seed(seed)
    with mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(cls, "load_state_dict", lambda self, state, *a, **k: None):
        model = cls("inception-v3-compat", ["2048", "logits_unbiased"])
    for sub in model.modules():
        if isinstance(sub, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _save(state, checkpoints_dir(torch_home) / INCEPTION_FILE)


def write_maskrcnn(torch_home: Path, seed: int = 0) -> Path:
    """torchvision's Mask R-CNN v2 COCO file; random, except that every box is classified ``DETECTED_CLASS``."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, maskrcnn_resnet50_fpn_v2

    torch.manual_seed(seed)
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    categories = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"]
    cls_score = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        cls_score.weight.mul_(0.0)
        cls_score.bias.fill_(-10.0)
        cls_score.bias[categories.index(DETECTED_CLASS)] = 10.0
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _save(state, checkpoints_dir(torch_home) / MASKRCNN_FILE)


def write_torch_cache(torch_home: Path, seed: int = 0) -> dict[str, Path]:
    """Every torch hub checkpoint iqabench's benchmarks read; file name -> path."""
    return {INCEPTION_FILE: write_inception(torch_home, seed), MASKRCNN_FILE: write_maskrcnn(torch_home, seed)}
