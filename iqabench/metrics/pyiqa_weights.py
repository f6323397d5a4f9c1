"""Which files building a pyiqa metric reads, where each is looked up, and whether they are all there.

The pyiqa file comes from the loader's own table: the arch module's ``default_model_urls`` (importing the one
arch module, as ``pyiqa.create_metric`` does), with the key its constructor picks from the metric's options in
``DEFAULT_CONFIGS``; the file name is the URL path's last part, as ``load_file_from_url`` names it. Backbones
are not in any pyiqa table: the archs call ``timm.create_model(pretrained=True)``, torchvision's weights enums or
a CLIP loader inside their constructors, so :data:`_BACKBONES` lists them per arch, read off pyiqa 0.1.16's
constructors. An arch that is in neither table is reported as unverified rather than "present".
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..contracts.needs import Need


@dataclass(frozen=True)
class WeightFile:
    """One file a metric reads at construction: where its loader looks, what it is, and how to provide it."""

    path: Path
    what: str
    how: str
    alternatives: tuple[Path, ...] = ()  # other names the same loader accepts (timm: pytorch_model.bin)
    kind: str = "url"  # how ``iqabench fetch`` gets it: "url" (source is the URL) or "hub-file" (source a repo id)
    source: str = ""

    def found(self) -> Path | None:
        """The file the loader would read, if any is there."""
        return next((p for p in (self.path, *self.alternatives) if p.is_file()), None)

    def present(self) -> bool:
        """There, and readable as tensors: a planted pickle is not "present" (``safe_load`` would refuse it)."""
        return self.found() is not None and self.refused() is None

    def refused(self) -> str | None:
        """``safe_load``'s one-sentence refusal of the file found, checked without unpickling it; else ``None``."""
        from ..io import safe_load

        found = self.found()
        return safe_load.check_file(found) if found is not None else None

    def missing_sentence(self) -> str:
        return f"{self.what} {self.path.name} is not in {self.path.parent} ({self.how})"

    def need(self, metric: str = "") -> Need:
        """This file as a run's :class:`~iqabench.contracts.needs.Need` (what the preflight lists and fetch
        downloads)."""
        found = self.found()
        refused = self.refused()
        what = f"{self.what} of {metric}" if metric else self.what
        if refused:  # there, but safe_load would refuse it: say why in the table, and fetch replaces it
            what = f"{what}, refused: {refused}"
        filename = self.path.name if self.kind == "hub-file" else None
        return Need(what, found or self.path, self.kind, self.source, found is not None and refused is None,
                    size=found.stat().st_size if found is not None else None, filename=filename,
                    message=self.missing_sentence() if found is None else (refused or ""))


def files_problem(files: list[WeightFile]) -> str | None:
    """Why ``files`` cannot be loaded (the missing ones, else the ones safe_load would refuse), or None."""
    missing = [f for f in files if f.found() is None]
    if missing:
        return "; ".join(f.missing_sentence() for f in missing)
    refused = [reason for f in files if (reason := f.refused())]
    return "; ".join(refused) if refused else None


# -- where each library looks ----------------------------------------------------------------------------------------
def pyiqa_cache_dir() -> Path:
    """pyiqa's weight cache, as its loader uses it now (``$TORCH_HOME/hub/pyiqa`` when pyiqa was imported)."""
    from pyiqa.utils import download_util

    return Path(download_util.DEFAULT_CACHE_DIR)


def _torch_hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir())


def pyiqa_file(url: str) -> WeightFile:
    name = os.path.basename(urlparse(url).path)
    return WeightFile(pyiqa_cache_dir() / name, "pyiqa weights",
                      f"download {url} into that folder on a connected machine", source=url)


def timm_backbone(model_name: str) -> WeightFile:
    """``timm.create_model(name, pretrained=True)``: ``model.safetensors`` of the model's Hugging Face repo."""
    import huggingface_hub.constants as hf_constants
    import timm
    from huggingface_hub import try_to_load_from_cache

    repo_id = timm.models.get_pretrained_cfg(model_name).hf_hub_id
    found = {f: try_to_load_from_cache(repo_id, f) for f in ("model.safetensors", "pytorch_model.bin")}
    cached = {f: Path(p) for f, p in found.items() if isinstance(p, str)}
    repo_dir = Path(hf_constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "<commit>"
    path = cached.get("model.safetensors", repo_dir / "model.safetensors")
    return WeightFile(path, f"timm backbone {model_name} (Hugging Face {repo_id})",
                      f"run `hf download {repo_id} model.safetensors` on a connected machine and copy the hub cache",
                      tuple(p for f, p in cached.items() if f != "model.safetensors"), kind="hub-file",
                      source=repo_id)


def torchvision_backbone(weights_enum: str) -> WeightFile:
    """A torchvision weights enum (``'VGG16_Weights.IMAGENET1K_V1'``): ``load_state_dict_from_url``'s file."""
    import torchvision

    enum_name, member = weights_enum.split(".")
    url = getattr(getattr(torchvision.models, enum_name), member).url
    return WeightFile(_torch_hub_dir() / "checkpoints" / os.path.basename(url),
                      f"torchvision backbone {weights_enum}", f"download {url} into that folder", source=url)


def openai_clip(name: str, *, pyiqa_copy: bool) -> WeightFile:
    """OpenAI CLIP: the ``clip`` package reads ``~/.cache/clip``, pyiqa's copy ``$TORCH_HOME/hub/clip``."""
    from pyiqa.archs.clip_model import _MODELS

    url = _MODELS[name]
    folder = _torch_hub_dir() / "clip" if pyiqa_copy else Path(os.path.expanduser("~/.cache/clip"))
    return WeightFile(folder / os.path.basename(url), f"OpenAI CLIP {name}", f"download {url} into that folder",
                      source=url)


# -- what each arch loads ------------------------------------------------------------------------------------------
# Constructor option naming the ``default_model_urls`` key, or a function of the options; archs not listed use
# their only key or an option whose value is a key.
def _dataset(o: dict[str, Any], default: str) -> list[str]:
    """``pretrained=True`` means the arch's default dataset, a string names one, a false value loads none."""
    return [default if o["pretrained"] is True else o["pretrained"]] if o["pretrained"] else []


_KEY: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "CFANet": lambda o: [o["model_name"]],
    "HyperNet": lambda o: ["resnet50-koniq"],
    "CLIPIQA": lambda o: [o["model_type"]] if "clipiqa+" in o["model_type"] else [],
    "LIQE": lambda o: _dataset(o, "koniq"),
    "MUSIQ": lambda o: _dataset(o, "ava"),
    "MANIQA": lambda o: [o["train_dataset"]] if o["pretrained"] else [],
    "DBCNN": lambda o: ["scnn", *_dataset(o, "koniq")],
    "CNNIQA": lambda o: [o["pretrained"]] if o["pretrained"] is not None else [],
    "LPIPS": lambda o: [f"{o['version']}_{o['net']}"] if o["pretrained"] else [],
    "NIQE": lambda o: ["url" if o["version"] == "original" else "niqe_matlab"],
    "ILNIQE": lambda o: ["ilniqe"],
    "BRISQUE": lambda o: ["url" if o["version"] == "original" else "brisque_matlab"],
}

_LPIPS_NETS = {"alex": "AlexNet_Weights.IMAGENET1K_V1", "vgg": "VGG16_Weights.IMAGENET1K_V1",
               "squeeze": "SqueezeNet1_1_Weights.IMAGENET1K_V1"}


def _cfanet_backbones(o: dict[str, Any]) -> list[WeightFile] | None:
    name = o["semantic_model_name"]
    if "swin" in name:
        return None  # pyiqa's own swin builder: not verified
    if name.startswith("clip_"):
        return [openai_clip(name.removeprefix("clip_"), pyiqa_copy=True)]
    return [timm_backbone(name)] if o["backbone_pretrain"] else []


# Backbones each arch's constructor loads (pyiqa 0.1.16). Empty list: none. Archs not here: unverified.
_BACKBONES: dict[str, Callable[[dict[str, Any]], list[WeightFile] | None]] = {
    "CFANet": _cfanet_backbones,
    "HyperNet": lambda o: [timm_backbone(o["base_model_name"])],
    "MANIQA": lambda o: [timm_backbone("vit_base_patch8_224")],
    "LAIONAes": lambda o: [openai_clip("ViT-L/14", pyiqa_copy=False)],
    "CLIPIQA": lambda o: [openai_clip(o["backbone"], pyiqa_copy=True)],
    "LIQE": lambda o: [openai_clip(o["backbone"], pyiqa_copy=True)],
    "DBCNN": lambda o: [torchvision_backbone("VGG16_Weights.IMAGENET1K_V1")],
    "DISTS": lambda o: [torchvision_backbone("VGG16_Weights.IMAGENET1K_V1")],
    "LPIPS": lambda o: [] if o["pnet_rand"] else [torchvision_backbone(_LPIPS_NETS[o["net"]])],
    "PI": lambda o: [pyiqa_file(importlib.import_module("pyiqa.archs.niqe_arch").default_model_urls["url"])],
    **{arch: (lambda o: []) for arch in (
        "MUSIQ", "CNNIQA", "PieAPP", "NIQE", "ILNIQE", "BRISQUE", "NRQM", "WaDIQaM",
        "SSIM", "MS_SSIM", "CW_SSIM", "PSNR", "FSIM", "VIF", "GMSD", "VSI", "MAD", "NLPD", "PIQE", "Entropy")},
}


def _arch(name: str) -> tuple[str, Any, dict[str, Any]]:
    """(arch type, arch module, constructor options: signature defaults updated with the metric's config)."""
    from pyiqa.archs import _lazy_import_arch
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    opts = dict(DEFAULT_CONFIGS[name]["metric_opts"])
    arch_type = str(opts.pop("type"))
    _lazy_import_arch(arch_type)
    cls = ARCH_REGISTRY.get(arch_type)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return arch_type, importlib.import_module(cls.__module__), {**defaults, **opts}


def _pyiqa_files(arch_type: str, module: Any, opts: dict[str, Any]) -> list[WeightFile]:
    urls: dict[str, str] = dict(getattr(module, "default_model_urls", None) or {})
    if not urls or opts.get("pretrained_model_path"):
        return []
    if arch_type in _KEY:
        keys = _KEY[arch_type](opts)
    elif len(urls) == 1:
        keys = list(urls) if opts.get("pretrained", True) else []
    else:
        keys = [v for v in opts.values() if isinstance(v, str) and v in urls][:1]
        if not keys:
            raise LookupError(f"cannot tell which of {arch_type}'s default_model_urls it loads")
    return [pyiqa_file(urls[k]) for k in keys]


#: Archs that read no file at all: no ``default_model_urls`` and no backbone (pyiqa 0.1.16; a test checks each
#: against its module). Their answer needs no import of the arch module, which for PIQE imports scipy through
#: ``pyiqa.matlab_utils``: a resume whose scores are all cached never builds the metric (issue 29).
_NO_FILES = frozenset({"PIQE", "Entropy", "SSIM", "MS_SSIM", "CW_SSIM", "PSNR", "FSIM", "VIF", "GMSD", "VSI", "MAD",
                       "NLPD"})


def reads_no_files(name: str) -> bool:
    """Building pyiqa metric ``name`` reads no file and downloads nothing (PIQE, Entropy, SSIM, ...)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    config = DEFAULT_CONFIGS.get(name)
    return config is not None and config["metric_opts"]["type"] in _NO_FILES


def pyiqa_weight_files(name: str) -> tuple[list[WeightFile], bool]:
    """Every file building pyiqa metric ``name`` reads, and whether its backbones are known (verified)."""
    if reads_no_files(name):
        return [], True
    arch_type, module, opts = _arch(name)
    files = _pyiqa_files(arch_type, module, opts)
    backbones = _BACKBONES[arch_type](opts) if arch_type in _BACKBONES else None
    return [*(backbones or []), *files], backbones is not None


def pyiqa_refusal(name: str) -> str | None:
    """safe_load's one-sentence refusal of a file building metric ``name`` would read, or ``None``."""
    try:
        files, _ = pyiqa_weight_files(name)
    except (ImportError, LookupError):
        return None  # not knowable here: the loader itself still reads through safe_load
    return next((reason for f in files if (reason := f.refused())), None)


def pyiqa_weights_status(name: str) -> tuple[bool | None, str]:
    """(present, detail): True only when building the metric offline would find every file, backbones included.

    ``None`` when pyiqa's files are there but the arch's backbones are not in iqabench's table.
    """
    try:
        files, verified = pyiqa_weight_files(name)
    except ImportError as exc:
        return False, f"pyiqa cannot import its arch ({exc}); install the missing package"
    except LookupError as exc:
        return None, f"unverified: {exc}"
    problem = files_problem(files)
    if problem:
        return False, problem
    if not verified:
        names = ", ".join(f.path.name for f in files) or "no pyiqa file needed"
        return None, f"unverified: {names} present, but iqabench does not know which backbones this arch loads"
    if not files:
        return True, "no download needed"
    return True, ", ".join(f.path.name for f in files)


def pyiqa_needs(name: str) -> list[Need]:
    """Every file building pyiqa metric ``name`` reads, as needs; an arch iqabench cannot read is one manual need."""
    try:
        files, _ = pyiqa_weight_files(name)
    except (ImportError, LookupError):
        return []  # not knowable here (pyiqa_weights_status says so): the build itself still checks
    return [f.need(name) for f in files]
