"""The IQA-Adapter module: configuration, quality tokens, and its attachment to a UNet.

:class:`IQAAdapter` owns the trainable parts (the projection and one
:class:`QualityAttnProcessor` per cross-attention layer) and holds the UNet by
reference only, so ``adapter.parameters()`` is exactly what training updates and
what a checkpoint stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .attention import QualityAttnProcessor, install_quality_processors, quality_processors
from .conditioning import MetricStats, QualityEncoding, TargetError, resolve_target
from .projection import PROJECTIONS, CheckpointError, ProjectionConfig, QualityProjection

PROJ_PREFIX = "image_proj."
ATTN_PREFIX = "ip_adapter."


@dataclass(frozen=True)
class AdapterConfig:
    """Everything that defines an adapter besides its tensors; stored in the safetensors metadata.

    ``metrics`` are pyiqa names in input order; ``stats`` the training-set
    statistics per metric (z-scoring and percentile targets); ``base`` the spec
    of the base model it was trained on (e.g. ``sdxl``, ``tiny-sd``).
    """

    metrics: tuple[str, ...]
    n_tokens: int = 2
    projection: str = "linear"
    mlp_inner_dim: int = 128
    use_flag: bool = False
    pos_frequencies: int = 0
    base: str | None = None
    stats: Mapping[str, MetricStats] = field(default_factory=dict)
    step: int | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            raise TargetError("an IQA-Adapter needs at least one metric")
        if self.projection not in PROJECTIONS:
            raise CheckpointError(f"unknown projection {self.projection!r}: choose one of {', '.join(PROJECTIONS)}")
        if self.n_tokens < 1 or self.pos_frequencies < 0:
            raise CheckpointError("n_tokens must be >= 1 and pos_frequencies >= 0")

    @property
    def encoding(self) -> QualityEncoding:
        return QualityEncoding(len(self.metrics), self.use_flag, self.pos_frequencies)

    def to_json(self) -> str:
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        data["stats"] = {name: s.to_dict() for name, s in self.stats.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AdapterConfig:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(f"adapter metadata has unknown fields {sorted(unknown)}; from a newer iqabench?")
        data["metrics"] = tuple(data["metrics"])
        data["stats"] = {name: MetricStats.from_dict(name, s) for name, s in data.get("stats", {}).items()}
        return cls(**data)

    def with_updates(self, **updates: Any) -> AdapterConfig:
        return replace(self, **{k: v for k, v in updates.items() if v is not None})


class IQAAdapter(nn.Module):
    """Projection + decoupled cross-attention processors, installed on ``unet`` at construction."""

    def __init__(self, config: AdapterConfig, unet: nn.Module, *, init_from_base: bool = True):
        super().__init__()
        self.config = config
        self.encoding = config.encoding
        cross_dim = int(unet.config.cross_attention_dim)
        self.projection = QualityProjection(ProjectionConfig(
            config.projection, self.encoding.input_dim, config.n_tokens, cross_dim, config.mlp_inner_dim))
        param = next(unet.parameters())
        self.projection.to(device=param.device, dtype=param.dtype)
        self._unet = [unet]  # a list so nn.Module does not register the UNet's parameters as ours
        self._original_processors = install_quality_processors(unet, config.n_tokens, init_from_base=init_from_base)
        self._ours = dict(unet.attn_processors)
        self.attn_processors = nn.ModuleList([p for _, _, p in quality_processors(unet)])
        self.attn_indices = [i for i, _, _ in quality_processors(unet)]

    @property
    def unet(self) -> nn.Module:
        return self._unet[0]

    # -- conditioning -------------------------------------------------------------------------
    def stats_list(self) -> list[MetricStats]:
        missing = [m for m in self.config.metrics if m not in self.config.stats]
        if missing:
            raise TargetError(f"the adapter has no training-set statistics for {missing}; pass stats=<file>")
        return [self.config.stats[m] for m in self.config.metrics]

    def target_z(self, targets: Sequence[Any]) -> torch.Tensor:
        """One ``target`` parameter per item -> [B, n_metrics] z-values."""
        stats = self.stats_list()
        return torch.tensor([resolve_target(t, stats) for t in targets], dtype=torch.float64)

    def _param(self) -> torch.Tensor:
        return self.projection.norm.weight

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """z-values [B, n] -> quality tokens [B, T, D] (the conditional branch)."""
        p = self._param()
        return self.projection(self.encoding.encode(z.to(torch.float32)).to(device=p.device, dtype=p.dtype))

    def negative_tokens(self, z: torch.Tensor, neg_k: float) -> torch.Tensor:
        """Tokens of the unconditional CFG branch: zero input, or q_neg = -k * q when ``neg_k`` > 0.

        q is the projection's input vector (after flag / positional encoding), as
        the released inference code negates whatever vector it feeds the projection.
        """
        p = self._param()
        if neg_k == 0:
            x = self.encoding.unconditional(z.shape[0], device=p.device, dtype=p.dtype)
        else:
            x = -float(neg_k) * self.encoding.encode(z.to(torch.float32)).to(device=p.device, dtype=p.dtype)
        return self.projection(x)

    def negative_tokens_per_item(self, z: torch.Tensor, neg_ks: Sequence[float]) -> torch.Tensor:
        p = self._param()
        encoded = self.encoding.encode(z.to(torch.float32)).to(device=p.device, dtype=p.dtype)
        factors = torch.tensor([-float(k) for k in neg_ks], device=p.device, dtype=p.dtype)[:, None]
        # -0.0 * x is -0.0 (or NaN for inf); use an exact zero vector for k == 0 items.
        x = torch.where(factors == 0, torch.zeros_like(encoded), factors * encoded)
        return self.projection(x)

    # -- lambda and the base model ------------------------------------------------------------
    def set_scale(self, scale: float | torch.Tensor) -> None:
        for proc in self.attn_processors:
            proc.scale = scale

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """Run the UNet with its original processors: the base model itself (how lambda == 0 is exact)."""
        self.unet.set_attn_processor(dict(self._original_processors))
        try:
            yield
        finally:
            self.unet.set_attn_processor(dict(self._ours))

    # -- released layout ------------------------------------------------------------------------
    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``image_proj.*`` + ``ip_adapter.<index>.to_{k,v}_ip.weight`` tensors (the authors' layout)."""
        out = {PROJ_PREFIX + k: v.detach() for k, v in self.projection.state_dict().items()}
        for index, proc in zip(self.attn_indices, self.attn_processors, strict=True):
            for k, v in proc.state_dict().items():
                out[f"{ATTN_PREFIX}{index}.{k}"] = v.detach()
        return out

    def load_released_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Load the authors' layout, failing with one sentence on any missing, extra or mis-shaped tensor."""
        proj = {k[len(PROJ_PREFIX):]: v for k, v in tensors.items() if k.startswith(PROJ_PREFIX)}
        attn = {k[len(ATTN_PREFIX):]: v for k, v in tensors.items() if k.startswith(ATTN_PREFIX)}
        other = [k for k in tensors if not k.startswith((PROJ_PREFIX, ATTN_PREFIX))]
        if other:
            raise CheckpointError(f"unexpected tensors {other[:5]} (expected only image_proj.* and ip_adapter.*)")
        _check_and_load(self.projection, proj, "image_proj")
        pairs = zip(self.attn_indices, self.attn_processors, strict=True)
        expected = {f"{i}.{k}" for i, p in pairs for k in p.state_dict()}
        if set(attn) != expected:
            missing = sorted(expected - set(attn), key=_natural)
            extra = sorted(set(attn) - expected, key=_natural)
            raise CheckpointError(
                f"ip_adapter tensors do not match this base model's {len(self.attn_indices)} cross-attention "
                f"layers (missing {missing[:4]}, unexpected {extra[:4]}); was it trained on another base model?"
            )
        for index, proc in zip(self.attn_indices, self.attn_processors, strict=True):
            _check_and_load(proc, {k.split(".", 1)[1]: v for k, v in attn.items()
                                   if k.split(".", 1)[0] == str(index)}, f"ip_adapter.{index}")


def _natural(key: str) -> tuple[int, str]:
    head = key.split(".", 1)[0]
    return (int(head) if head.isdigit() else -1, key)


def _check_and_load(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    own = module.state_dict()
    if set(state) != set(own):
        raise CheckpointError(f"{where} has keys {sorted(state)}, expected {sorted(own)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{where}.{k} has shape {tuple(v.shape)} but the base model needs {tuple(own[k].shape)}; "
                "the checkpoint was made for a different base model or adapter configuration"
            )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


__all__ = ["AdapterConfig", "IQAAdapter", "QualityAttnProcessor", "PROJ_PREFIX", "ATTN_PREFIX"]
