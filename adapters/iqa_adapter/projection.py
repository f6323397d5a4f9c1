"""Projection of the quality vector into ``n_tokens`` cross-attention tokens (paper Sec. 3.2).

Two variants, with the parameter names of the released checkpoints so their
``image_proj.*`` tensors load without remapping:

* ``linear``: ``proj`` = Linear(in -> T*D), then ``norm`` = LayerNorm(D) per token;
* ``mlp``:    ``proj`` = Sequential(Linear(in -> inner), GELU, Linear(inner -> T*D)), then LayerNorm(D).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from iqabench.contracts.errors import UserInputError

PROJECTIONS = ("linear", "mlp")


class CheckpointError(UserInputError):
    """A checkpoint that does not fit the adapter or the base model; the message is one sentence."""


@dataclass(frozen=True)
class ProjectionConfig:
    kind: str
    input_dim: int
    n_tokens: int
    cross_attention_dim: int
    inner_dim: int = 128

    def __post_init__(self) -> None:
        if self.kind not in PROJECTIONS:
            raise CheckpointError(f"unknown projection {self.kind!r}: choose one of {', '.join(PROJECTIONS)}")
        if min(self.input_dim, self.n_tokens, self.cross_attention_dim, self.inner_dim) < 1:
            raise CheckpointError(f"projection sizes must be positive, got {self}")


class QualityProjection(nn.Module):
    """[B, input_dim] -> [B, n_tokens, cross_attention_dim]."""

    def __init__(self, config: ProjectionConfig):
        super().__init__()
        self.config = config
        out = config.n_tokens * config.cross_attention_dim
        if config.kind == "linear":
            self.proj = nn.Linear(config.input_dim, out)
        else:
            self.proj = nn.Sequential(nn.Linear(config.input_dim, config.inner_dim), nn.GELU(),
                                      nn.Linear(config.inner_dim, out))
        self.norm = nn.LayerNorm(config.cross_attention_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.input_dim:
            raise ValueError(f"quality input must be [batch, {self.config.input_dim}], got {tuple(x.shape)}")
        tokens = self.proj(x).reshape(x.shape[0], self.config.n_tokens, self.config.cross_attention_dim)
        return self.norm(tokens)


def infer_projection_config(state: Mapping[str, torch.Tensor]) -> ProjectionConfig:
    """Read projection type, input width, token count and width from ``image_proj`` tensor shapes."""
    if "norm.weight" not in state:
        raise CheckpointError("image_proj lacks 'norm.weight'; this is not an IQA-Adapter projection")
    dim = int(state["norm.weight"].shape[0])
    if "proj.weight" in state:
        kind, first, last, inner = "linear", state["proj.weight"], state["proj.weight"], 128
    elif "proj.0.weight" in state and "proj.2.weight" in state:
        kind, first, last = "mlp", state["proj.0.weight"], state["proj.2.weight"]
        inner = int(first.shape[0])
    else:
        raise CheckpointError(
            "image_proj has neither 'proj.weight' (linear) nor 'proj.0.weight'/'proj.2.weight' (mlp); "
            f"found keys {sorted(state)}"
        )
    rows = int(last.shape[0])
    if rows % dim:
        raise CheckpointError(f"projection output {rows} is not a multiple of the token width {dim}")
    config = ProjectionConfig(kind, int(first.shape[1]), rows // dim, dim, inner)
    expected = set(QualityProjection(config).state_dict())
    if set(state) != expected:
        raise CheckpointError(
            f"image_proj keys {sorted(state)} do not match a {kind} projection ({sorted(expected)})"
        )
    return config
