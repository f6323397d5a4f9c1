"""ImageReward (Xu et al., *ImageReward*, NeurIPS 2023): a BLIP reward model, scored against each image's prompt.

What the released model computes (``ImageReward.score`` of THUDM/ImageReward, package ``image-reward`` 1.5):

1. the image, as a PIL image, resized to 224 px on its short side (bicubic), centre-cropped to 224 x 224 and
   normalised with OpenAI CLIP's mean/std;
2. BLIP's ViT-L/16 visual encoder (224 px, patch 16, width 1024, depth 24, 16 heads, MLP ratio 4, qkv bias,
   LayerNorm eps 1e-6): every token after the final LayerNorm;
3. the prompt, tokenised by ``bert-base-uncased`` with BLIP's two added special tokens (``[DEC]`` as BOS,
   ``[ENC]``), padded to ``max_length=35`` and truncated; the first token stays ``[CLS]`` (ImageReward does
   not swap in ``[ENC]`` as BLIP's ITM head does);
4. BLIP's text encoder (BERT with a cross-attention block per layer, ``med_config.json``; the cross-attention
   keys/values take the ViT's width) over the prompt, attending to all image tokens;
5. the first token's last hidden state through a five-layer linear MLP (hidden -> 1024 -> 128 -> 64 -> 16 -> 1,
   no activations; the dropouts are inactive at evaluation) and standardised with the training set's
   statistics: ``(r - 0.16717362830052426) / 1.0333394966054072``. Higher is better; about N(0, 1) over the
   training prompts' images.

The weights are the released files of the hub repository ``THUDM/ImageReward`` (``ImageReward.pt``: a
``torch.save`` of the model's ``state_dict``, read tensors-only through :mod:`iqabench.io.safe_load`;
``med_config.json``) and the tokenizer files of ``bert-base-uncased``, the id the official code loads. The
architecture is rebuilt from the field's classes whose parameter names are the checkpoint's own: timm's
``VisionTransformer`` (BLIP's ViT is timm's, ``blip.visual_encoder.*``) and transformers' ``BlipTextModel``
(BLIP's ``med.py`` BERT, ``blip.text_encoder.*``); each part loads strictly. The contrastive projections
``blip.vision_proj`` / ``blip.text_proj`` are in the file but unused by the score, as in the official code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..metric_catalog import PREFERENCE_FILES

#: BLIP's ``create_vit('large', 224)`` (ImageReward builds ``BLIP_Pretrain(image_size=224, vit='large')``).
BLIP_VIT_LARGE: dict[str, int] = {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}
#: ImageReward.py: ``self.mean`` / ``self.std``, the reward's statistics the released score is standardised by.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: ImageReward.py: the prompt is padded to and truncated at 35 tokens.
PROMPT_TOKENS = 35
#: ImageReward.py ``_transform``: OpenAI CLIP's normalisation.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The parts of the checkpoint the score uses, by key prefix.
VISUAL, TEXT, HEAD = "blip.visual_encoder.", "blip.text_encoder.", "mlp.layers."


def reward_head(width: int) -> nn.Sequential:
    """ImageReward's MLP with its parameter indices (``layers.0/2/4/6/7``): linear layers, dropouts between."""
    return nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def blip_tokenizer(repo_id: str):
    """``bert-base-uncased`` plus BLIP's ``[DEC]`` (BOS) and ``[ENC]`` tokens (BLIP's ``init_tokenizer``)."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(repo_id)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def text_config(med: dict, encoder_width: int):
    """``med_config.json`` (a BERT config) as transformers' ``BlipTextConfig``; cross-attention over the ViT."""
    from transformers import BlipTextConfig

    return BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=med["hidden_size"],
                          encoder_hidden_size=encoder_width, intermediate_size=med["intermediate_size"],
                          num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
                          max_position_embeddings=med["max_position_embeddings"], hidden_act=med["hidden_act"],
                          layer_norm_eps=med["layer_norm_eps"], pad_token_id=med.get("pad_token_id", 0),
                          is_decoder=True)  # is_decoder builds the cross-attention blocks (med's add_cross_attention)


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, renamed to the module's own names."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


class ImageReward(nn.Module):
    """ImageReward v1.0 score of each image against its prompt (see the module docstring for the steps)."""

    def __init__(self):
        super().__init__()
        from huggingface_hub import hf_hub_download
        from timm.models.vision_transformer import VisionTransformer
        from torchvision import transforms
        from transformers import BlipTextModel

        from ..io.safe_load import load_tensors

        (repo, (config_file, weights_file)), (tokenizer_repo, _) = PREFERENCE_FILES["imagereward"]
        med = json.loads(Path(hf_hub_download(repo, config_file)).read_text("utf-8"))
        state = load_tensors(hf_hub_download(repo, weights_file))  # a torch.save file: tensors only
        self.visual = VisionTransformer(**BLIP_VIT_LARGE, mlp_ratio=4.0, qkv_bias=True, num_classes=0,
                                        global_pool="")
        self.text = BlipTextModel(text_config(med, BLIP_VIT_LARGE["embed_dim"]), add_pooling_layer=False)
        self.head = reward_head(med["hidden_size"])
        self.visual.load_state_dict(part(state, VISUAL))
        text_state = part(state, TEXT)
        text_state.pop("embeddings.position_ids", None)  # a buffer older transformers saved; rebuilt here
        self.text.load_state_dict(text_state)
        self.head.load_state_dict(part(state, HEAD))
        self.eval()
        self.tokenizer = blip_tokenizer(tokenizer_repo)
        side = BLIP_VIT_LARGE["img_size"]
        self.preprocess = transforms.Compose([
            transforms.Resize(side, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(side),
            transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        from ..execution.image_tensors import quantize, to_pil

        device = next(self.parameters()).device
        pil = [to_pil(image) for image in quantize(images.detach().clamp(0, 1))]  # 8-bit, as the cached PNG
        pixels = torch.stack([self.preprocess(image) for image in pil]).to(device)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=PROMPT_TOKENS,
                                return_tensors="pt").to(device)
        image_tokens = self.visual.forward_features(pixels)
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=device)
        text = self.text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                         encoder_hidden_states=image_tokens, encoder_attention_mask=image_mask)
        rewards = self.head(text.last_hidden_state[:, 0, :].float()).squeeze(-1)
        return ((rewards - REWARD_MEAN) / REWARD_STD).float()


def build_imagereward(device: torch.device) -> nn.Module:
    """ImageReward v1.0 (Xu et al. 2023): BLIP reward model, standardised score, higher is better (~N(0, 1))."""
    return ImageReward()
