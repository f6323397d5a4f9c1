"""CLIP through open_clip: the real model when its weights are present, a tiny random one for smoke runs.

Shared by GenEval's colour step (official: ViT-L-14, ``openai`` weights) and
FID top-k's CLIP-T / CLIP-I. ``weights`` picks where weights come from:

* ``"pretrained"`` (default): open_clip's own cache for ``pretrained`` (a tag
  such as ``openai``); nothing is downloaded when the hub is offline;
* a path to an open_clip checkpoint file (``.safetensors`` or a ``.pt`` state
  dict, loaded by open_clip with ``weights_only=True``);
* ``"random"``: a tiny randomly initialised CLIP (seeded) for weights-free smoke
  runs; its numbers mean nothing and every report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqabench.contracts.errors import UserInputError
from iqabench.contracts.generators import WeightsMissingError

RANDOM = "random"


class WeightsUnavailableError(WeightsMissingError):
    """Model weights are not on this machine; the message says which file, where it looked and how to provide it."""


@dataclass
class ClipModel:
    """An open_clip model with its image transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: torch.device
    fingerprint: str
    random: bool

    @torch.no_grad()
    def encode_images(self, images: list, batch_size: int = 16) -> torch.Tensor:
        """L2-normalised image embeddings [N, D] (CPU float32) of PIL images."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start:start + batch_size]])
            feats = self.model.encode_image(batch.to(self.device)).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised text embeddings [N, D] (CPU float32)."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            feats = self.model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)


def _tiny_random_clip(seed: int) -> Any:
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(
            embed_dim=64,
            vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        )


def build_clip(arch: str = "ViT-L-14", pretrained: str = "openai", weights: str = "pretrained",
               device: str | torch.device = "cpu", seed: int = 0) -> ClipModel:
    """Load CLIP, or fail with one sentence naming the weights, where they were looked for and how to give them."""
    import open_clip

    device = torch.device(device)
    tokenizer = open_clip.get_tokenizer(arch if weights != RANDOM else "ViT-B-32")
    if weights == RANDOM:
        model = _tiny_random_clip(seed).to(device).eval()
        preprocess = open_clip.image_transform(64, is_train=False)
        return ClipModel(model, preprocess, tokenizer, device, f"open_clip-tiny-random/seed={seed}", True)
    if arch not in open_clip.list_models():
        raise UserInputError(f"open_clip has no architecture {arch!r}; see open_clip.list_models()")
    source = pretrained
    if weights != "pretrained":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"CLIP weights file {path} does not exist; pass an open_clip checkpoint for {arch} "
                "(e.g. --option clip_weights=/path/open_clip_model.safetensors) or --option weights=random "
                "for a weights-free smoke run")
        source = str(path)
    # OpenAI's weights were trained with QuickGELU, which open_clip's plain "ViT-L-14" config does not use: it
    # only warns about the mismatch, and the features would silently differ from the official evaluators'.
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu", False))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=source, device=device,
                                                                     force_quick_gelu=quick_gelu)
    except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors depending on what is missing
        if weights == "pretrained":
            from huggingface_hub import constants

            repo = open_clip.get_pretrained_cfg(arch, pretrained).get("hf_hub", "").rstrip("/")
            where = f"the Hugging Face cache {constants.HF_HUB_CACHE}" + (f" (repository {repo})" if repo else "")
        else:
            where = source
        raise WeightsUnavailableError(
            f"CLIP weights {arch}/{pretrained} could not be loaded from {where} ({type(exc).__name__}); download them "
            "on a connected machine with open_clip.create_model('"
            f"{arch}', pretrained='{pretrained}'), or pass --option clip_weights=PATH, or --option weights=random "
            "for a weights-free smoke run") from None
    model.eval()
    source_name = pretrained if weights == "pretrained" else Path(weights).name
    fingerprint = f"open_clip-{open_clip.__version__}/{arch}/{source_name}" + ("/quickgelu" if quick_gelu else "")
    return ClipModel(model, preprocess, tokenizer, device, fingerprint, False)
