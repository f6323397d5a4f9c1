"""ACPO stage 1 for the IPCE-style evaluator: fit its regression head on an image/MOS table.

The CLIP towers stay frozen (as ACPO uses the evaluator frozen in stage 2); stage 1 extracts the features
[S_g, S_l...] of every image once, standardises them and fits the linear head so that
``low + (high - low) * sigmoid(head(z))`` predicts the MOS (MSE on MOS scaled to [0, 1]). A held-out split
reports SRCC/PLCC.

Checkpoints are safetensors (``head.*`` and the feature statistics) with the CLIP model name, its weights
(an open_clip ``pretrained`` tag or a local .safetensors file), the layers and the MOS range in the metadata
key ``iqabench.ipce``; the CLIP weights themselves are not copied. Nothing is unpickled on load.

Settings confirmed from the official IPCE code (pf0607/IPCE, ``train_aigc_agiqa3k.py``): CLIP ViT-B/32 and a
1-5 quality scale (its five quality levels weighted 1..5). The layers and head the ACPO paper uses could not be
confirmed offline; ``docs/paper_settings.md`` says which defaults are ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iqabench.contracts.errors import UserInputError

from .evaluator_files import read_evaluator_info, save_evaluator_file
from .evaluators import IPCEEvaluator
from .mos_table import MosTable

METADATA_KEY = "iqabench.ipce"
# IPCE_CLIP, IPCE_PRETRAINED, IPCE_MOS_RANGE and DEFAULT_LAYERS live in .config (torch-free, so the CLI can show
# them as defaults without importing torch) and are re-exported here.
from .config import DEFAULT_LAYERS, IPCE_CLIP, IPCE_MOS_RANGE, IPCE_PRETRAINED  # noqa: E402,F401


@dataclass
class IpceFit:
    train_loss: list[float]  # MSE on [0, 1]-scaled MOS, per epoch
    n_train: int
    n_val: int
    srcc: float | None  # held-out Spearman of predicted vs true MOS (None without a split)
    plcc: float | None


def load_clip(name: str, weights: str | None, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """An open_clip model and tokenizer: ``weights`` is a pretrained tag (``openai``) or a local file."""
    import open_clip

    # OpenAI's weights need QuickGELU, which the plain "ViT-B-32" config lacks (open_clip only warns).
    quick_gelu = bool(weights and open_clip.get_pretrained_cfg(name, weights).get("quick_gelu", False))
    model = open_clip.create_model(name, pretrained=weights, device=device, force_quick_gelu=quick_gelu)
    return model.eval(), open_clip.get_tokenizer(name)


@torch.no_grad()
def extract_features(evaluator: IPCEEvaluator, table: MosTable, batch_size: int = 32) -> torch.Tensor:
    """[N, 1 + layers] features of every row, read a batch of images at a time."""
    device = next(evaluator.model.parameters()).device
    rows = []
    for start in range(0, len(table), batch_size):
        index = range(start, min(start + batch_size, len(table)))
        images = table.images(index, evaluator.image_size).to(device)
        rows.append(evaluator.features(images, [table.prompts[i] for i in index]).float().cpu())
    return torch.cat(rows)


def fit_head(evaluator: IPCEEvaluator, features: torch.Tensor, scores: torch.Tensor, *, epochs: int = 500,
             lr: float = 1e-2, val_fraction: float = 0.2, seed: int = 0) -> IpceFit:
    """Fit ``evaluator``'s head (full batch, Adam) on precomputed features; the rest of the model is untouched."""
    from scipy import stats

    n = features.shape[0]
    if n < 2:
        raise UserInputError(f"need at least 2 rated images to fit the IPCE head, got {n}")
    low, high = evaluator.mos_range
    target = ((scores.float() - low) / (high - low)).clamp(0, 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction)) if n >= 10 else 0
    val, train = order[:n_val], order[n_val:]
    mean, std = features[train].mean(dim=0), features[train].std(dim=0).clamp_min(1e-6)
    evaluator.feature_mean.copy_(mean)
    evaluator.feature_std.copy_(std)
    head = evaluator.head.to(features.device).float()
    head.requires_grad_(True)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        loss = F.mse_loss(torch.sigmoid(evaluator.logit(features[train])), target[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    head.requires_grad_(False)
    srcc = plcc = None
    if n_val >= 3:
        with torch.no_grad():
            predicted = (low + (high - low) * torch.sigmoid(evaluator.logit(features[val]))).numpy()
        truth = scores[val].numpy()
        srcc = float(stats.spearmanr(predicted, truth).statistic)
        plcc = float(stats.pearsonr(predicted, truth).statistic)
    return IpceFit(losses, len(train), n_val, srcc, plcc)


def save_ipce(evaluator: IPCEEvaluator, path: str | Path, clip: str, weights: str | None,
              extra: dict[str, Any] | None = None) -> Path:
    """Write the head and feature statistics as safetensors, with what rebuilding the evaluator needs."""
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in evaluator.state_dict().items()
               if not k.startswith("model.")}
    info = {"clip": clip, "weights": weights, "layers": evaluator.layers, "mos_range": list(evaluator.mos_range),
            **(extra or {})}
    return save_evaluator_file(tensors, path, METADATA_KEY, info)


def load_ipce(path: str | Path, device: str | torch.device = "cpu") -> IPCEEvaluator:
    """The evaluator a stage-1 checkpoint describes (CLIP rebuilt from its name and weights, head loaded)."""
    from safetensors.torch import load_file

    path = Path(path)
    info = read_evaluator_info(path, METADATA_KEY, "IPCE", "iqabench train ipce")
    model, tokenizer = load_clip(info["clip"], info.get("weights"), device)
    evaluator = IPCEEvaluator(model, tokenizer, layers=info["layers"], mos_range=tuple(info["mos_range"]))
    state = load_file(str(path))
    missing = {"head.weight", "head.bias", "feature_mean", "feature_std"} - set(state)
    if missing:
        raise UserInputError(f"{path} lacks {sorted(missing)}")
    evaluator.load_state_dict(state, strict=False)
    return evaluator.to(device).eval()


def train_ipce(table: MosTable, out: str | Path, *, clip: str = IPCE_CLIP, weights: str | None = IPCE_PRETRAINED,
               layers: tuple[int, ...] = DEFAULT_LAYERS, mos_range: tuple[float, float] | None = IPCE_MOS_RANGE,
               epochs: int = 500, lr: float = 1e-2, val_fraction: float = 0.2, batch_size: int = 32, seed: int = 0,
               device: str | torch.device = "cpu", init_from: str | Path | None = None) -> tuple[Path, IpceFit]:
    """Stage 1 end to end: load CLIP, extract features, fit the head, write ``out/ipce.safetensors``.

    ``init_from``: an earlier IPCE checkpoint whose head this fit starts from (the paper's staged pre-training:
    AGIQA-1K/3K, then AIGCIQA2023, then AIGCQA-30K; the feature standardisation is recomputed per table).
    """
    model, tokenizer = load_clip(clip, weights, device)
    if mos_range is None:
        mos_range = (float(table.scores.min()), float(table.scores.max()))
    if not mos_range[1] > mos_range[0]:
        raise UserInputError(f"the MOS range {mos_range} is empty: are all scores equal?")
    evaluator = IPCEEvaluator(model, tokenizer, layers=layers, mos_range=mos_range)
    if init_from is not None:
        from safetensors.torch import load_file

        state = load_file(str(init_from))
        evaluator.head.load_state_dict({k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")})
    features = extract_features(evaluator, table, batch_size)
    fit = fit_head(evaluator, features, table.scores, epochs=epochs, lr=lr, val_fraction=val_fraction, seed=seed)
    path = save_ipce(evaluator, Path(out) / "ipce.safetensors", clip, weights,
                     {"rows": len(table), "epochs": epochs, "lr": lr, "srcc": fit.srcc, "plcc": fit.plcc})
    (Path(out) / "ipce_fit.json").write_text(json.dumps({"train_loss_first": fit.train_loss[0],
                                                         "train_loss_last": fit.train_loss[-1],
                                                         "n_train": fit.n_train, "n_val": fit.n_val,
                                                         "srcc": fit.srcc, "plcc": fit.plcc}, indent=1))
    return path, fit
