"""Random-weight files in the exact layout of pyiqa's weight cache and of the backbone caches its archs read.

What a real ``pyiqa.create_metric(name)`` downloads, written without a network:

- pyiqa's own files in ``$TORCH_HOME/hub/pyiqa/<name from the arch's default_model_urls>``, holding what
  ``load_pretrained_network`` reads: the arch's state dict, wrapped in ``{"params": ...}`` where the arch passes
  ``weight_keys='params'`` (topiq, hyperiqa, liqe, dbcnn, cnniqa), bare elsewhere (musiq, maniqa, pieapp, the
  laion_aes MLP, the lpips/dists heads), a bare tensor for clipiqa+'s learned prompt;
- timm backbones as Hugging Face snapshots ``$HF_HOME/hub/models--timm--<id>/snapshots/<commit>/model.safetensors``
  (full-size: timm builds the architecture itself and loads strictly);
- torchvision backbones in ``$TORCH_HOME/hub/checkpoints/<file of the weights enum's url>`` (full-size keys and
  shapes: ``load_state_dict`` is strict);
- OpenAI CLIP in ``~/.cache/clip/ViT-L-14.pt`` (the ``clip`` package, laion_aes) and
  ``$TORCH_HOME/hub/clip/{RN50,ViT-B-32}.pt`` (pyiqa's copy, clipiqa+ / liqe), TorchScript archives as OpenAI
  ships them. The CLIP loaders rebuild the model from the shapes in the file (``build_model``), so these are
  scaled down (one layer, width 64) with the real output width, and every pyiqa file stacked on them is built
  on the same scaled-down CLIP.

Every pyiqa arch is built with its real constructor (on the meta device, with its backbones loaded from this
mirror), so keys and shapes are the ones the loaders expect. Tensors are filled cheaply: a shared random pool.
``torch.save`` files store each tensor as a strided view of that one pool, so a 528 MB VGG16 file is a few
MB with the real keys and shapes; safetensors files (which forbid shared storage) are written in float16, which
``load_state_dict`` casts. Normalisation layers get weight 1, bias 0, running variance 1 so random networks
give finite, non-constant scores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PYIQA_METRICS = ("topiq_nr", "laion_aes", "hyperiqa", "clipiqa+", "liqe", "musiq", "maniqa", "dbcnn", "cnniqa",
                 "lpips", "dists", "pieapp", "ssim")

# Scaled-down OpenAI CLIP: output width as the real model (the heads stacked on it read it), one layer each.
_CLIP_SHAPES = {
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=14),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=1, vision_width=64, vision_patch_size=32),
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(1, 1, 1, 1), vision_width=16,
                 vision_patch_size=None),
}
_CLIP_TEXT = dict(context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                  transformer_layers=1)


@dataclass(frozen=True)
class MirrorDirs:
    """The cache folders of one mirror; ``env()`` points the libraries at them."""

    root: Path

    @property
    def hf_home(self) -> Path:
        return self.root / "hf"

    @property
    def torch_home(self) -> Path:
        return self.root / "torch"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def pyiqa(self) -> Path:
        return self.torch_home / "hub" / "pyiqa"

    @property
    def checkpoints(self) -> Path:
        return self.torch_home / "hub" / "checkpoints"

    def env(self) -> dict[str, str]:
        from . import mirror_env  # the one definition of the mirror's environment

        return mirror_env(self.root)


@contextlib.contextmanager
def use_mirror(dirs: MirrorDirs) -> Iterator[MirrorDirs]:
    """Point this process at the mirror: environment, plus the cache paths libraries froze at import time."""
    import huggingface_hub.constants as hf_constants

    saved_env = {k: os.environ.get(k) for k in dirs.env()}
    frozen: list[tuple[Any, str, Any]] = []

    def freeze(module: Any, attribute: str, value: Any) -> None:
        frozen.append((module, attribute, getattr(module, attribute)))
        setattr(module, attribute, value)

    os.environ.update(dirs.env())
    freeze(hf_constants, "HF_HUB_CACHE", str(dirs.hf_home / "hub"))
    freeze(hf_constants, "HF_HOME", str(dirs.hf_home))
    freeze(hf_constants, "HF_HUB_OFFLINE", True)
    for name, module in list(sys.modules.items()):  # pyiqa modules bind DEFAULT_CACHE_DIR when imported
        if name.startswith("pyiqa") and isinstance(getattr(module, "DEFAULT_CACHE_DIR", None), str):
            freeze(module, "DEFAULT_CACHE_DIR", str(dirs.pyiqa))
    try:
        yield dirs
    finally:
        for module, attribute, value in reversed(frozen):
            setattr(module, attribute, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- cheap random tensors ------------------------------------------------------------------------------------------
_POOL_SIZE = 1 << 20


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _pool(dtype: torch.dtype) -> torch.Tensor:
    with _seeded(0):
        return (torch.randn(_POOL_SIZE) * 0.05).to(dtype)


def _norm_defaults(model: nn.Module) -> dict[str, float]:
    """weight=1, bias=0, running_var=1 for normalisation layers: random ones make scores NaN or constant."""
    values: dict[str, float] = {}
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    for prefix, module in model.named_modules():
        if isinstance(module, norms) or type(module).__name__ in ("LayerNorm", "LayerNorm2d", "GroupNorm"):
            dot = f"{prefix}." if prefix else ""
            values.update({f"{dot}weight": 1.0, f"{dot}bias": 0.0, f"{dot}running_var": 1.0,
                           f"{dot}running_mean": 0.0})
    return values


def random_state(model: nn.Module, *, shared: bool, dtype: torch.dtype = torch.float32,
                 keys: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """The model's state-dict keys and shapes with cheap random values (``shared``: strided views of one pool)."""
    pool = _pool(dtype)
    defaults = _norm_defaults(model)
    state: dict[str, torch.Tensor] = {}
    for name, meta in model.state_dict().items():
        if keys is not None and not keys(name):
            continue
        shape = tuple(meta.shape)
        if not meta.is_floating_point():
            state[name] = torch.zeros(shape, dtype=meta.dtype)
        elif name in defaults:
            state[name] = torch.full(shape, defaults[name], dtype=dtype)
        elif shared and sum(s - 1 for s in shape) < _POOL_SIZE:
            offset = int(hashlib.sha1(name.encode()).hexdigest()[:6], 16) % (_POOL_SIZE - sum(s - 1 for s in shape))
            state[name] = pool.as_strided(shape, (1,) * len(shape), offset)
        else:
            numel = max(1, meta.numel())
            state[name] = pool.repeat(-(-numel // _POOL_SIZE))[:numel].reshape(shape).clone()
    return state


# -- writers for each cache ----------------------------------------------------------------------------------------
def _save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_timm_backbone(dirs: MirrorDirs, model_name: str) -> Path:
    """timm's pretrained weights as the Hugging Face snapshot ``timm.create_model(pretrained=True)`` reads."""
    import timm
    from safetensors.torch import save_file

    repo_id = timm.models.get_pretrained_cfg(model_name).hf_hub_id
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = dirs.hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    target = repo / "snapshots" / commit / "model.safetensors"
    if target.is_file():
        return target
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    state = {k: v.contiguous() for k, v in random_state(model, shared=False, dtype=torch.float16).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (target.parent / "config.json").write_text(json.dumps({"architecture": model_name}))
    save_file(state, str(target))
    return target


def write_torchvision_backbone(dirs: MirrorDirs, weights: Any) -> Path:
    """A torchvision weights enum's file in ``$TORCH_HOME/hub/checkpoints`` (``load_state_dict_from_url``)."""
    import torchvision

    target = dirs.checkpoints / os.path.basename(weights.url)
    if target.is_file():
        return target
    builder = torchvision.models.get_model_builder(type(weights).__name__.removesuffix("_Weights").lower())
    with torch.device("meta"):
        model = builder(weights=None)
    _save(target, random_state(model, shared=True))
    return target


def write_openai_clip(dirs: MirrorDirs, name: str, folder: Path) -> Path:
    """A scaled-down OpenAI CLIP as a TorchScript archive under the real file name, as OpenAI ships it.

    The loaders rebuild the model from the shapes in the file (``build_model``), so a smaller CLIP with the real
    output width loads. Tracing ``encode_text`` keeps every parameter and buffer of the model in the archive.
    """
    from clip.model import CLIP
    from pyiqa.archs.clip_model import _MODELS

    target = folder / os.path.basename(_MODELS[name])
    if target.is_file():
        return target
    with _seeded(0):
        model = CLIP(**_CLIP_SHAPES[name], **_CLIP_TEXT).eval()
    state = random_state(model, shared=False)
    state["logit_scale"] = torch.tensor(4.6052)  # log(100), OpenAI's value: keeps softmax over prompts sane
    model.load_state_dict(state)
    tokens = torch.zeros(1, _CLIP_TEXT["context_length"], dtype=torch.long)
    tokens[0, :2] = torch.tensor([49406, 49407])  # start and end of text
    traced = torch.jit.trace_module(model, {"encode_text": tokens})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.jit.save(traced, str(tmp))
    tmp.replace(target)
    return target


def _pyiqa_arch(metric: str, device: str = "meta", **overrides: Any) -> nn.Module:
    """The metric's pyiqa arch built by its own constructor, without its pyiqa weights.

    On the meta device (no memory, no init) where the constructor allows it; on the CPU for CLIP-based archs
    (the CLIP loaders move the model with ``.to(device)``, which a meta model refuses) and constructors that
    read tensor values.
    """
    from pyiqa.archs import build_network
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    opts = dict(DEFAULT_CONFIGS[metric]["metric_opts"])
    opts.update(overrides)
    if device == "meta":
        try:
            with torch.device("meta"):
                return build_network(opts)
        except (RuntimeError, NotImplementedError):  # a constructor reads values (e.g. ``.item()``): build for real
            pass
    with _seeded(0):
        return build_network(opts)


def _url_file(arch_module: str, key: str) -> str:
    import importlib
    from urllib.parse import urlparse

    # As pyiqa's load_file_from_url names it: the URL path's last part, still percent-encoded ('sac%2Blogos...').
    url = importlib.import_module(f"pyiqa.archs.{arch_module}").default_model_urls[key]
    return os.path.basename(urlparse(url).path)


def _write_pyiqa(dirs: MirrorDirs, arch_module: str, key: str, payload: Callable[[], Any]) -> Path:
    target = dirs.pyiqa / _url_file(arch_module, key)
    if not target.is_file():
        _save(target, payload())
    return target


def _params(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"params": state}


def _not_backbone(*prefixes: str) -> Callable[[str], bool]:
    return lambda key: not key.startswith(prefixes)


def write_metric(dirs: MirrorDirs, metric: str) -> list[Path]:
    """Every file ``pyiqa.create_metric(metric)`` reads, backbones first (the arch is built on top of them)."""
    import torchvision

    from iqabench.io import safe_load

    with use_mirror(dirs):
        safe_load.import_clip_loaders()  # so that install() covers pyiqa's and clip's CLIP downloads too
        safe_load.install()  # the CLIP loaders' SHA-256 check would reject a random file; read as tensors instead
        if metric == "topiq_nr":
            files = [write_timm_backbone(dirs, "resnet50")]
            files.append(_write_pyiqa(dirs, "topiq_arch", "cfanet_nr_koniq_res50", lambda: _params(
                random_state(_pyiqa_arch(metric, pretrained=False), shared=True))))
        elif metric == "hyperiqa":
            files = [write_timm_backbone(dirs, "resnet50")]
            files.append(_write_pyiqa(dirs, "hypernet_arch", "resnet50-koniq", lambda: _params(
                random_state(_pyiqa_arch(metric, pretrained=False), shared=True))))
        elif metric == "maniqa":
            files = [write_timm_backbone(dirs, "vit_base_patch8_224")]
            files.append(_write_pyiqa(dirs, "maniqa_arch", "koniq", lambda: random_state(
                _pyiqa_arch(metric, pretrained=False), shared=True)))
        elif metric == "laion_aes":
            files = [write_openai_clip(dirs, "ViT-L/14", dirs.home / ".cache" / "clip")]
            files.append(_write_pyiqa(dirs, "laion_aes_arch", "url", lambda: random_state(
                _pyiqa_arch(metric, device="cpu", pretrained=False).mlp, shared=True)))
        elif metric == "clipiqa+":
            files = [write_openai_clip(dirs, "RN50", dirs.torch_home / "hub" / "clip")]
            files.append(_write_pyiqa(dirs, "clipiqa_arch", "clipiqa+", lambda: random_state(
                _pyiqa_arch(metric, device="cpu", pretrained=False).prompt_learner, shared=False)["ctx"]))
        elif metric == "liqe":
            files = [write_openai_clip(dirs, "ViT-B/32", dirs.torch_home / "hub" / "clip")]
            files.append(_write_pyiqa(dirs, "liqe_arch", "koniq", lambda: _params(
                random_state(_pyiqa_arch(metric, device="cpu", pretrained=False), shared=True))))
        elif metric == "musiq":
            files = [_write_pyiqa(dirs, "musiq_arch", "koniq10k", lambda: random_state(
                _pyiqa_arch(metric, pretrained=False), shared=True))]
        elif metric == "dbcnn":
            files = [write_torchvision_backbone(dirs, torchvision.models.VGG16_Weights.IMAGENET1K_V1)]
            files.append(_write_pyiqa(dirs, "dbcnn_arch", "scnn", lambda: random_state(
                _scnn(), shared=True)))
            files.append(_write_pyiqa(dirs, "dbcnn_arch", "koniq", lambda: _params(
                random_state(_pyiqa_arch(metric, pretrained=False), shared=True))))
        elif metric == "cnniqa":
            files = [_write_pyiqa(dirs, "cnniqa_arch", "koniq10k", lambda: _params(
                random_state(_pyiqa_arch(metric, pretrained=None), shared=True)))]
        elif metric == "lpips":
            files = [write_torchvision_backbone(dirs, torchvision.models.AlexNet_Weights.IMAGENET1K_V1)]
            files.append(_write_pyiqa(dirs, "lpips_arch", "0.1_alex", lambda: random_state(
                _pyiqa_arch(metric, pretrained=False), shared=True, keys=lambda k: k.startswith("lin"))))
        elif metric == "dists":
            files = [write_torchvision_backbone(dirs, torchvision.models.VGG16_Weights.IMAGENET1K_V1)]
            files.append(_write_pyiqa(dirs, "dists_arch", "url", lambda: _dists_head()))
        elif metric == "pieapp":
            files = [_write_pyiqa(dirs, "pieapp_arch", "url", lambda: random_state(
                _pyiqa_arch(metric, pretrained=False), shared=True))]
        elif metric == "ssim":
            files = []  # a formula: nothing to download
        else:
            raise KeyError(f"the pyiqa mirror has no writer for {metric!r}; it covers {', '.join(PYIQA_METRICS)}")
    return files


def _scnn() -> nn.Module:
    from pyiqa.archs.dbcnn_arch import SCNN

    with torch.device("meta"):
        return SCNN(use_bn=True)


def _dists_head() -> dict[str, torch.Tensor]:
    """DISTS' learned alpha/beta (the VGG features come from torchvision); positive so the distance is sane."""
    model = _pyiqa_arch("dists", pretrained=False)
    state = random_state(model, shared=False, keys=lambda k: k in ("alpha", "beta"))
    return {k: v.abs() + 0.01 for k, v in state.items()}


def write_pyiqa_mirror(root: str | Path, metrics: tuple[str, ...] | list[str] = PYIQA_METRICS) -> MirrorDirs:
    """Write (once: existing files are kept) every file the given pyiqa metrics load, under ``root``."""
    dirs = MirrorDirs(Path(root))
    for metric in metrics:
        write_metric(dirs, metric)
    return dirs
