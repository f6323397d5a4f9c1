"""ImageReward's score restated in plain torch ops over the checkpoint's state dict: the test's reference.

The official package (``image-reward`` 1.5) cannot be imported beside the installed libraries: its ``med.py``
imports ``apply_chunking_to_forward`` from ``transformers.modeling_utils`` (gone in transformers 5), its ViT
needs ``fairscale``, and it pins ``timm==0.6.13``. So this file re-states what ``ImageReward.score`` computes,
step by step from the official sources (ImageReward.py, models/BLIP/vit.py, med.py), with none of the classes
iqabench builds (no timm, no ``BlipTextModel``): eager attention, BERT's ``-10000`` additive padding mask.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tokenize(prompt: str) -> dict[str, torch.Tensor]:
    """BLIP's init_tokenizer (bert-base-uncased + [DEC], [ENC]) with ImageReward's padding to 35 tokens."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained("bert-base-uncased")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")


def preprocess(image) -> torch.Tensor:
    """ImageReward.py ``_transform(224)``."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224), ToTensor(),
                    Normalize(CLIP_MEAN, CLIP_STD)])(image.convert("RGB"))[None]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def visual(state: dict, pixels: torch.Tensor, heads: int, patch: int) -> torch.Tensor:
    """BLIP vit.py VisionTransformer.forward: patches, [CLS], positions, pre-norm blocks, final LayerNorm."""
    def p(key):
        return state["blip.visual_encoder." + key]

    width = p("cls_token").shape[-1]
    x = F.conv2d(pixels, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), stride=patch)
    x = torch.cat([p("cls_token").expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    x = x + p("pos_embed")[:, : x.shape[1]]
    depth = len({k.split(".")[3] for k in state if k.startswith("blip.visual_encoder.blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (width,), p(b + "norm1.weight"), p(b + "norm1.bias"), eps=1e-6)
        q, k, v = F.linear(h, p(b + "attn.qkv.weight"), p(b + "attn.qkv.bias")).chunk(3, dim=-1)
        q, k, v = (_heads(t, heads) for t in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
        x = x + F.linear(_merge(attn @ v), p(b + "attn.proj.weight"), p(b + "attn.proj.bias"))
        h = F.layer_norm(x, (width,), p(b + "norm2.weight"), p(b + "norm2.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, p(b + "mlp.fc1.weight"), p(b + "mlp.fc1.bias"))),
                     p(b + "mlp.fc2.weight"), p(b + "mlp.fc2.bias"))
        x = x + h
    return F.layer_norm(x, (width,), p("norm.weight"), p("norm.bias"), eps=1e-6)


def text(state: dict, med: dict, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """med.py BertModel.forward in 'multimodal' mode: self-attention, cross-attention to the image, feed-forward."""
    def p(key):
        return state["blip.text_encoder." + key]

    hidden, heads, eps = med["hidden_size"], med["num_attention_heads"], med["layer_norm_eps"]

    def norm(x, key):
        return F.layer_norm(x, (hidden,), p(key + ".weight"), p(key + ".bias"), eps=eps)

    def attention(prefix, x, context, additive):
        q, k, v = (_heads(F.linear(src, p(f"{prefix}.self.{n}.weight"), p(f"{prefix}.self.{n}.bias")), heads)
                   for n, src in (("query", x), ("key", context), ("value", context)))
        scores = q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5 + additive
        out = F.linear(_merge(scores.softmax(dim=-1) @ v), p(f"{prefix}.output.dense.weight"),
                       p(f"{prefix}.output.dense.bias"))
        return norm(out + x, f"{prefix}.output.LayerNorm")

    x = p("embeddings.word_embeddings.weight")[ids] + p("embeddings.position_embeddings.weight")[: ids.shape[1]]
    x = norm(x, "embeddings.LayerNorm")
    padding = (1.0 - mask[:, None, None, :].float()) * -10000.0  # BertModel.get_extended_attention_mask
    for i in range(med["num_hidden_layers"]):
        b = f"encoder.layer.{i}."
        x = attention(b + "attention", x, x, padding)
        x = attention(b + "crossattention", x, image, 0.0)  # all image tokens attended (image_atts = ones)
        h = F.gelu(F.linear(x, p(b + "intermediate.dense.weight"), p(b + "intermediate.dense.bias")))
        x = norm(F.linear(h, p(b + "output.dense.weight"), p(b + "output.dense.bias")) + x, b + "output.LayerNorm")
    return x


def imagereward_score(image, prompt: str, *, vit_heads: int, patch: int = 16) -> float:
    """``ImageReward.score(prompt, image)`` on the hub cache's ``THUDM/ImageReward`` files."""
    from huggingface_hub import hf_hub_download

    state = torch.load(hf_hub_download("THUDM/ImageReward", "ImageReward.pt"), map_location="cpu", weights_only=True)
    with open(hf_hub_download("THUDM/ImageReward", "med_config.json"), encoding="utf-8") as handle:
        med = json.load(handle)
    tokens = tokenize(prompt)
    with torch.no_grad():
        image_embeds = visual(state, preprocess(image), vit_heads, patch)
        features = text(state, med, tokens["input_ids"], tokens["attention_mask"], image_embeds)[:, 0, :]
        for index in (0, 2, 4, 6, 7):  # MLP: linear layers only (dropouts off)
            features = F.linear(features, state[f"mlp.layers.{index}.weight"], state[f"mlp.layers.{index}.bias"])
    return float((features[0, 0] - MEAN) / STD)
