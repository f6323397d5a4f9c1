"""Text-image preference metrics, scored against each image's prompt: PickScore, CLIPScore, HPSv2, ImageReward, IPCE.

They are *prompt-aware* metrics (``MetricInfo.prompt_aware``): the module is called as ``module(images,
prompts)`` with [N, 3, H, W] floats in [0, 1] and one prompt per image, and the scorer hands each image the
prompt it was generated from. Each loads the released weights from the Hugging Face hub cache with
``from_pretrained`` (safetensors, or a ``.bin`` read tensors-only through :mod:`iqabench.io.safe_load`).

* ``pickscore`` (Kirstain et al., *Pick-a-Pic*, 2023): ``yuvalkirstain/PickScore_v1`` with the processor of
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; score = ``logit_scale.exp() * cos(image, prompt)``, the model
  card's formula (the same code is in X1716/IQA-Adapter ``metric_calculation/calc_hps_scores_CC3M.py``).
* ``clipscore`` (Hessel et al., *CLIPScore*, EMNLP 2021, Sec. 3): ``CLIP-S = 2.5 * max(cos(image, text), 0)``
  with OpenAI ViT-B/32 and the prompt prefixed by "A photo depicts " as in the paper and its reference code
  (jmhessel/clipscore). It replaces pyiqa's ``clipscore`` entry (same formula), which could not receive a prompt
  and resizes tensors rather than PIL images as the reference code does.
* ``clipscore_100``: ``100 * max(cos, 0)`` with ViT-L/14 and the bare prompt, torchmetrics' ``CLIPScore``
  convention that most text-to-image papers report (values ~30 rather than ~0.75).
* ``hpsv2`` / ``hpsv2.1`` (Wu et al., *Human Preference Score v2*, 2023): cos(image, prompt) of open_clip
  ViT-H-14 with ``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt`` from ``xswu/HPSv2`` (a ``torch.save`` file,
  read tensors-only), as ``hpsv2.score`` computes it.
* ``imagereward`` (Xu et al., *ImageReward*, 2023): the BLIP reward model of ``THUDM/ImageReward``
  (``ImageReward.pt``, read tensors-only, and ``med_config.json``) with the ``bert-base-uncased`` tokenizer,
  standardised as ``ImageReward.score`` returns it (:mod:`.imagereward`).
* ``ipce:<checkpoint>`` (the IPCE evaluator ``iqabench train ipce`` fits) is in the ACPO plugin,
  ``iqabench.adapters.acpo.metric``, registered on first use of the name (``registration.METRIC_FAMILIES``).

Images reach the processors as 8-bit PIL images, as they were written to the cache, so a score equals the
reference code run on the PNG. None of these is differentiable through the processor (``differentiable=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..metric_catalog import PREFERENCE_FILES
from .preference_weights import preference_weights_status

HESSEL_W = 2.5  # CLIPScore paper, Sec. 3: w = 2.5 rescales CLIP-S to roughly [0, 1]
HESSEL_PREFIX = "A photo depicts "  # the prompt prefix of the CLIPScore paper and its reference code


def to_pil(images: torch.Tensor) -> list:
    """[N, 3, H, W] floats in [0, 1] -> 8-bit PIL images (exact for images that came from PNGs)."""
    from PIL import Image

    arrays = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]


def _embeds(out) -> torch.Tensor:
    """The projected embeddings: a tensor up to transformers 4, the ``pooler_output`` of the output from 5 on."""
    return out if torch.is_tensor(out) else out.pooler_output


class ClipPreference(nn.Module):
    """``scale * cos(image, text)`` of a Hugging Face ``CLIPModel`` (clamped at 0 when ``clamp``)."""

    def __init__(self, model_repo: str, processor_repo: str, *, scale: float | None, clamp: bool, prefix: str = ""):
        super().__init__()
        from transformers import AutoProcessor, CLIPModel

        self.model = CLIPModel.from_pretrained(model_repo).eval()
        self.processor = AutoProcessor.from_pretrained(processor_repo)
        self.scale, self.clamp, self.prefix = scale, clamp, prefix

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"].to(device)
        text = self.processor(text=[self.prefix + p for p in prompts], padding=True, truncation=True, max_length=77,
                              return_tensors="pt").to(device)
        image_embs = _embeds(self.model.get_image_features(pixel_values=pixels))
        text_embs = _embeds(self.model.get_text_features(**text))
        image_embs = image_embs / image_embs.norm(dim=-1, keepdim=True)
        text_embs = text_embs / text_embs.norm(dim=-1, keepdim=True)
        cos = (image_embs * text_embs).sum(dim=-1)
        if self.clamp:
            cos = cos.clamp(min=0)
        scale = self.model.logit_scale.exp() if self.scale is None else self.scale
        return (scale * cos).float()


def build_pickscore(device: torch.device) -> nn.Module:
    """PickScore v1: logit_scale.exp() x cosine of the fine-tuned CLIP-H (about 18-23 for typical images)."""
    (model_repo, _), (processor_repo, _) = PREFERENCE_FILES["pickscore"]
    return ClipPreference(model_repo, processor_repo, scale=None, clamp=False)


def build_clipscore(device: torch.device) -> nn.Module:
    """CLIPScore as Hessel et al. define it: 2.5 x max(cos, 0), ViT-B/32, "A photo depicts " prefix."""
    ((repo, _),) = PREFERENCE_FILES["clipscore"]
    return ClipPreference(repo, repo, scale=HESSEL_W, clamp=True, prefix=HESSEL_PREFIX)


def build_clipscore_100(device: torch.device) -> nn.Module:
    """CLIPScore as torchmetrics computes it: 100 x max(cos, 0), ViT-L/14, the bare prompt."""
    ((repo, _),) = PREFERENCE_FILES["clipscore_100"]
    return ClipPreference(repo, repo, scale=100.0, clamp=True)


#: HPSv2's architecture: open_clip ViT-H-14 (hpsv2 builds ``create_model_and_transforms('ViT-H-14', ...)`` and
#: loads the checkpoint's ``state_dict`` over it).
HPS_ARCH = "ViT-H-14"


class HPSv2(nn.Module):
    """HPSv2 score: cos(image, prompt) of open_clip ViT-H-14 with the HPSv2 weights (hpsv2's ``score``:
    ``diag(image_features @ text_features.T)``, no logit scale); about 0.2-0.3 for typical images."""

    def __init__(self, filename: str):
        super().__init__()
        import open_clip
        from huggingface_hub import hf_hub_download

        from ..io.safe_load import load_tensors

        ((repo, _),) = PREFERENCE_FILES["hpsv2"]
        path = hf_hub_download(repo, filename)
        state = load_tensors(path)  # a torch.save file: read tensors-only, never unpickled
        state = state.get("state_dict", state)
        self.model = open_clip.create_model(HPS_ARCH, pretrained=None)
        self.model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(HPS_ARCH)
        self.preprocess = open_clip.image_transform(self.model.visual.image_size, is_train=False)

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        pixels = torch.stack([self.preprocess(image) for image in to_pil(images)]).to(device)
        image_features = self.model.encode_image(pixels)
        text_features = self.model.encode_text(self.tokenizer(list(prompts)).to(device))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return (image_features * text_features).sum(dim=-1).float()


def build_hpsv2(device: torch.device) -> nn.Module:
    """HPSv2.0: cos(image, prompt) of the HPSv2 ViT-H-14 (the version the IQA-Adapter authors scored CC3M with)."""
    return HPSv2(PREFERENCE_FILES["hpsv2"][0][1][0])


def build_hpsv2_1(device: torch.device) -> nn.Module:
    """HPSv2.1: the same model with the v2.1 weights."""
    return HPSv2(PREFERENCE_FILES["hpsv2.1"][0][1][0])


def register_preference_metrics() -> None:
    """Register pickscore, clipscore, clipscore_100, hpsv2, hpsv2.1, imagereward (``ipce:<file>`` registers on
    first use)."""
    from ..metric_catalog import PREFERENCE_RANGES
    from .imagereward import build_imagereward
    from .registration import register_metric

    table = (("pickscore", build_pickscore, "PickScore_v1"),
             ("clipscore", build_clipscore, "hessel2021-w2.5-vitb32"),
             ("clipscore_100", build_clipscore_100, "torchmetrics-w100-vitl14"),
             ("hpsv2", build_hpsv2, "HPS_v2_compressed"),
             ("hpsv2.1", build_hpsv2_1, "HPS_v2.1_compressed"),
             ("imagereward", build_imagereward, "ImageReward-v1.0"))
    for name, factory, version in table:
        score_range = PREFERENCE_RANGES[name]
        register_metric(name, lower_better=False, differentiable=False, prompt_aware=True, score_range=score_range,
                        version=version, description=(factory.__doc__ or "").strip().splitlines()[0],
                        weights=lambda n=name: preference_weights_status(n), native_side=224,
                        overwrite=name == "clipscore")(factory)
