"""By hand, not collected: iqabench's ``imagereward`` and the plain-torch restatement against the *official* classes.

The official package cannot be a test dependency (it pins ``timm==0.6.13`` and ``fairscale``, and its BLIP code
predates transformers 5), but its model classes run here with a few shims to *library* helpers that transformers
5 removed; none touches the model's arithmetic. Usage::

    pip download image-reward==1.5 --no-deps -d /tmp/ir
    unzip -q /tmp/ir/image_reward-1.5-py3-none-any.whl -d /tmp/ir/whl
    IQABENCH_ROOT=$PWD python tests/imagereward_official_check.py /tmp/ir/whl /tmp/ir/mirror

It writes the hub mirror's ImageReward files under the second folder, loads them into the official ``ImageReward``
(``load_state_dict(strict=False)`` as ``ImageReward.load`` does, printing that every key matched), and prints
``ImageReward.score(prompt, image)`` beside iqabench's score and the restatement for a few images and prompts.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path


def _shim_libraries() -> None:
    import torch
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils
    from transformers import BertTokenizer, PreTrainedModel

    modeling_utils.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward  # moved in transformers 5
    modeling_utils.prune_linear_layer = pytorch_utils.prune_linear_layer
    modeling_utils.find_pruneable_heads_and_indices = lambda *a, **k: None  # head pruning only, never called
    if not hasattr(PreTrainedModel, "get_head_mask"):  # no head mask given: one None per layer
        PreTrainedModel.get_head_mask = lambda self, head_mask, n, is_attention_chunked=False: [None] * n
    if not hasattr(PreTrainedModel, "invert_attention_mask"):
        def invert(self, mask):
            return (1.0 - mask[:, None, None, :].to(self.dtype)) * torch.finfo(self.dtype).min
        PreTrainedModel.invert_attention_mask = invert
    if not hasattr(BertTokenizer, "additional_special_tokens_ids"):  # BLIP's enc_token_id, unused by the score
        BertTokenizer.additional_special_tokens_ids = property(lambda self: self.convert_tokens_to_ids(["[ENC]"]))
    checkpointing = types.ModuleType("fairscale.nn.checkpoint.checkpoint_activations")
    checkpointing.checkpoint_wrapper = lambda module: module  # only with gradient checkpointing
    for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules[checkpointing.__name__] = checkpointing


def _official(wheel: Path):
    """``ImageReward.ImageReward`` without the package ``__init__`` (it imports ReFL's training stack and clip)."""
    root = wheel / "ImageReward"
    for package, path in (("ImageReward", root), ("ImageReward.models", root / "models"),
                          ("ImageReward.models.BLIP", root / "models" / "BLIP")):
        module = types.ModuleType(package)
        module.__path__ = [str(path)]
        sys.modules[package] = module
    med = importlib.import_module("ImageReward.models.BLIP.med")
    med.BertModel.init_weights = lambda self: None  # random init only; every weight comes from the checkpoint
    return importlib.import_module("ImageReward.ImageReward"), importlib.import_module(
        "ImageReward.models.BLIP.blip_pretrain")


def main(wheel: Path, mirror: Path) -> float:
    tests = Path(__file__).resolve().parent
    sys.path.insert(0, str(tests))
    from hub_mirror import mirror_env

    os.environ.update(mirror_env(mirror))
    from hub_mirror.imagereward_cache import TINY_BLIP_VIT, TINY_MED_CONFIG, use_tiny_blip_vit, write_imagereward

    write_imagereward(Path(os.environ["HF_HUB_CACHE"]))
    _shim_libraries()
    official, blip_pretrain = _official(wheel)
    from ImageReward.models.BLIP.vit import VisionTransformer

    def tiny_vit(*args, **kwargs):  # the one architecture constant the mirror scales down, as use_tiny_blip_vit
        vit = {k: TINY_BLIP_VIT[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")}
        return VisionTransformer(**vit), TINY_BLIP_VIT["embed_dim"]

    blip_pretrain.create_vit = tiny_vit
    import numpy as np
    import torch
    from huggingface_hub import hf_hub_download
    from PIL import Image

    model = official.ImageReward(med_config=hf_hub_download("THUDM/ImageReward", "med_config.json"))
    model.mlp = official.MLP(TINY_MED_CONFIG["hidden_size"])  # MLP(768) hard-codes the released BERT width
    state = torch.load(hf_hub_download("THUDM/ImageReward", "ImageReward.pt"), map_location="cpu", weights_only=True)
    print(model.load_state_dict(state, strict=False))
    model.eval()
    use_tiny_blip_vit()
    import imagereward_reference

    from iqabench.metrics import build_metric

    ours = build_metric("imagereward")
    rng = np.random.default_rng(0)
    worst = 0.0
    for height, width in ((40, 56), (300, 200), (224, 224)):
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        batch = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
        for prompt in ("a red bicycle leaning on a wall", "an astronaut riding a horse on the moon, highly "
                       "detailed, 8k, trending on artstation, by two painters whose names make it longer"):
            with torch.no_grad():
                reference = model.score(prompt, image)
            mine = float(ours.score(batch, prompts=[prompt])[0])
            restated = imagereward_reference.imagereward_score(image, prompt, vit_heads=TINY_BLIP_VIT["num_heads"])
            worst = max(worst, abs(reference - mine), abs(reference - restated))
            print(f"{height}x{width} official {reference:.7f} iqabench {mine:.7f} restated {restated:.7f}")
    print(f"largest absolute difference: {worst:.2e}")
    return worst


if __name__ == "__main__":
    sys.exit(0 if main(Path(sys.argv[1]), Path(sys.argv[2])) < 1e-5 else 1)
