"""ACPO stage 1: bounded, differentiable quality evaluators Q(images, prompts) -> [N] in [0, 1].

(a) :class:`MetricEvaluator`: any differentiable NR metric (``iqabench.metrics``),
    mapped to [0, 1] by its score range when given, else by a sigmoid.
(b) :class:`IPCEEvaluator`: the text-image scorer of the seed's Eqs. (1)-(3) on
    open_clip (see the class).
(c) :class:`TwoStreamIQA`: the two-stream NR-IQA network of Eq. (4), with
    :func:`train_two_stream` on (image, MOS) tables.

Stage-1 training of (b) is in :mod:`.ipce`; checkpoints of (b) and (c) are safetensors
(:mod:`.ipce`, :mod:`.evaluator_spec`).

All are ``nn.Module``s with frozen parameters at training time (ACPO trains the
LoRA only); gradients flow to the input images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqabench.contracts.errors import UserInputError

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MetricEvaluator(nn.Module):
    """(a) A differentiable NR metric as a bounded quality Q in [0, 1], higher = better.

    With ``low``/``high`` (the metric's score range) Q = (s - low) / (high - low)
    clamped, flipped for lower-is-better metrics; without them Q = sigmoid(
    (s - center) / temperature) (flipped likewise), which never saturates the
    gradient to exactly zero.
    """

    def __init__(self, metric: Any, low: float | None = None, high: float | None = None, center: float = 0.0,
                 temperature: float = 1.0):
        super().__init__()
        if not getattr(metric, "differentiable", False):
            raise UserInputError(f"metric {getattr(metric, 'name', metric)!r} is not differentiable; "
                                 f"ACPO needs gradients")
        if (low is None) != (high is None) or (low is not None and not high > low):
            raise UserInputError("give both low and high (with high > low) or neither")
        self.metric, self.low, self.high = metric, low, high
        self.center, self.temperature = center, temperature
        if isinstance(getattr(metric, "module", None), nn.Module):
            self.metric_module = metric.module  # registered, so .requires_grad_(False) / .to() reach it

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        score = self.metric.raw(images).to(images.device).float()
        if self.low is not None:
            q = ((score - self.low) / (self.high - self.low)).clamp(0, 1)
        else:
            q = torch.sigmoid((score - self.center) / self.temperature)
        return 1 - q if self.metric.lower_better else q


def _clip_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] images -> CLIP's input: bicubic resize to ``size`` and mean/std normalisation, inside the graph."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
    mean = images.new_tensor(_CLIP_MEAN)[:, None, None]
    std = images.new_tensor(_CLIP_STD)[:, None, None]
    return (images - mean) / std


class IPCEEvaluator(nn.Module):
    """(b) IPCE-style text-image quality score on an open_clip model (seed Eqs. (1)-(3)).

    S_g = cos(E_img(x), E_txt(c)) (Eq. 1); for each chosen visual layer l,
    S_l = mean over patch tokens of cos(patch_l, cls_l) (Eq. 2, local-global
    agreement); Q = sigmoid(w_g * S_g + sum_l w_l * S_l + b) (Eq. 3), the
    regression head ``head`` (a linear layer on the standardised features
    [S_g, S_l...]; ``feature_mean`` / ``feature_std`` are 0 / 1 until stage 1
    fits them). Q in (0, 1) is what ACPO optimises; :meth:`mos` maps it onto the
    training table's MOS scale (``mos_range``, 1-5 as the IPCE paper reports).
    Layer outputs are read with forward hooks on ``visual.transformer.resblocks``.
    ``model`` is any open_clip ``CLIP`` with a ViT tower; stage 1
    (:mod:`.ipce`, ``iqabench train ipce``) fits the head on an image/MOS table,
    tests build a tiny random CLIP (:func:`tiny_open_clip`).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, layers: Sequence[int] = (-1,),
                 layer_weights: Sequence[float] | None = None, global_weight: float = 1.0, bias: float = 0.0,
                 mos_range: tuple[float, float] = (1.0, 5.0)):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        blocks = model.visual.transformer.resblocks
        self.layers = [i % len(blocks) for i in layers]
        weights = list(layer_weights) if layer_weights is not None else [1.0 / len(self.layers)] * len(self.layers)
        if len(weights) != len(self.layers):
            raise ValueError(f"{len(self.layers)} layers but {len(weights)} layer weights")
        if not mos_range[1] > mos_range[0]:
            raise ValueError(f"mos_range must be (low, high) with high > low, got {mos_range}")
        self.mos_range = (float(mos_range[0]), float(mos_range[1]))
        self.head = nn.Linear(1 + len(self.layers), 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[float(global_weight), *map(float, weights)]]))
            self.head.bias.fill_(float(bias))
        self.register_buffer("feature_mean", torch.zeros(1 + len(self.layers)))
        self.register_buffer("feature_std", torch.ones(1 + len(self.layers)))
        self._tokens: dict[int, torch.Tensor] = {}
        for i in sorted(set(self.layers)):
            blocks[i].register_forward_hook(self._hook(i))
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)

    def _hook(self, index: int):
        def save(module, args, output):
            self._tokens[index] = output[0] if isinstance(output, tuple) else output
        return save

    def components(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_g [N], S_l [N, layers]) before the regression head."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        self._tokens.clear()
        image_features = self.model.encode_image(_clip_input(images.float(), self.image_size))
        device = image_features.device
        text = self.tokenizer(list(prompts)).to(device)
        text_features = self.model.encode_text(text)
        s_global = F.cosine_similarity(image_features, text_features, dim=-1)
        local = []
        for i in self.layers:
            tokens = self._tokens[i]
            if tokens.shape[0] != images.shape[0]:  # sequence-first transformer layout
                tokens = tokens.transpose(0, 1)
            cls, patches = tokens[:, :1], tokens[:, 1:]
            local.append(F.cosine_similarity(patches, cls.expand_as(patches), dim=-1).mean(dim=1))
        return s_global, torch.stack(local, dim=1)

    def features(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """[S_g, S_l...] per image, [N, 1 + layers]: the head's input before standardisation."""
        s_global, s_local = self.components(images, prompts)
        return torch.cat([s_global[:, None], s_local], dim=1)

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.feature_mean.to(features)) / self.feature_std.to(features)
        return self.head(z)[:, 0]

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return torch.sigmoid(self.logit(self.features(images, prompts)))

    def mos(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """The predicted score on the training table's MOS scale (``mos_range``)."""
        low, high = self.mos_range
        return low + (high - low) * self(images, prompts)


def tiny_open_clip(seed: int = 0, image_size: int = 32) -> tuple[nn.Module, Any]:
    """A tiny random open_clip CLIP (ViT tower, 2 layers) and open_clip's bundled tokenizer: offline tests only."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(embed_dim=32,
                 vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=image_size),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
    return model.eval(), open_clip.get_tokenizer("ViT-B-32")


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Gradient-magnitude map of the luminance (Sobel), [N, 1, H, W]: the second stream's input."""
    gray = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(dim=1, keepdim=True)
    kx = images.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
    gx = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx.transpose(-1, -2))
    return torch.sqrt(gx**2 + gy**2 + 1e-8)


def _encoder(in_channels: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for out in (width, width * 2, width * 4):
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU()]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class TwoStreamIQA(nn.Module):
    """(c) Two-stream NR-IQA (seed Eq. (4)): Q = sigmoid(MLP([E_img(x); E_grad(G(x))])), G the Sobel map.

    Bounded in (0, 1) by the sigmoid; trained on MOS rescaled to [0, 1].
    """

    def __init__(self, width: int = 16, hidden: int = 64, size: int | None = 224):
        super().__init__()
        self.size = size
        self.arguments = {"width": width, "hidden": hidden, "size": size}  # what a checkpoint needs to rebuild it
        self.image_stream = _encoder(3, width)
        self.gradient_stream = _encoder(1, width)
        self.head = nn.Sequential(nn.Linear(8 * width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        x = images.float()
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        features = torch.cat([self.image_stream(x), self.gradient_stream(sobel_magnitude(x))], dim=1)
        return torch.sigmoid(self.head(features)[:, 0])


def train_two_stream(model: TwoStreamIQA, images: torch.Tensor, mos: torch.Tensor, *, epochs: int = 10,
                     lr: float = 1e-3, batch_size: int = 16, seed: int = 0,
                     mos_range: tuple[float, float] | None = None) -> list[float]:
    """Fit ``model`` to (image, MOS) pairs with MSE on MOS scaled to [0, 1]; returns the loss per epoch.

    ``images`` [N,3,H,W] in [0,1]; ``mos`` [N]; ``mos_range`` defaults to the table's min/max.
    Tables of rated images: :func:`.mos_table.read_mos_table` (``iqabench train two-stream`` reads one).
    """
    if images.shape[0] != mos.shape[0] or images.shape[0] == 0:
        raise ValueError(f"need one MOS per image, got {images.shape[0]} images and {mos.shape[0]} scores")
    low, high = mos_range if mos_range is not None else (float(mos.min()), float(mos.max()))
    if not high > low:  # the user's table or range: one sentence, not a traceback
        if mos_range is not None:
            raise UserInputError(f"MOS range {low:g},{high:g} is empty: low must be below high")
        raise UserInputError(f"every MOS in the table is {low:g}; a table whose scores are all equal has nothing "
                             "to learn (pass --mos-range low,high or rate more varied images)")
    target = ((mos.float() - low) / (high - low)).clamp(0, 1)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=g)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.mse_loss(model(images[idx]), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
    model.eval()
    return losses
