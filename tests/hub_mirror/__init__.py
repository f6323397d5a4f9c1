"""A hub mirror for tests: random-weight files in exactly the on-disk layout real downloads produce.

One entry point, :func:`build_mirror`, writes the parts asked for under one
root and returns the environment that points every loader at them::

    root/hf/hub/models--org--name/...      Hugging Face hub cache (HF_HOME=root/hf)
    root/torch/hub/checkpoints/...         torch hub checkpoints (TORCH_HOME=root/torch)
    root/torch/hub/pyiqa/...               pyiqa's weight cache (pyiqa reads torch.hub.get_dir()/pyiqa)
    root/iqa-adapter/...                   IQABENCH_ADAPTER_DIR
    root/home/.cache/clip/...              the ``clip`` package's cache (HOME=root/home)

Nothing here is downloaded and nothing is faked at the loader: each writer
builds the real class (scaled down where the loader does not check sizes, at
its real architecture where it does) and saves it under the real file name.
The environment also sets ``HF_HUB_OFFLINE=1`` so a file the mirror lacks fails
at once. Set it *before* importing pyiqa / huggingface_hub in the process that
loads (they freeze cache paths at import): tests run the CLI in a subprocess.

Parts (``parts=``): ``hf`` (diffusers pipelines of the presets), ``hf-modern`` (SD3.5 medium, FLUX.1-dev/schnell,
PixArt-Sigma, see ``modern``), ``clip``
(open_clip ViT-L-14/openai; ``clip:ViT-B-32`` for the IPCE evaluator's),
``torch`` (torch-fidelity Inception, torchvision Mask R-CNN), ``tiny-decoders`` (TAESD / TAESDXL for
guidance's ``decoder=tiny``, with a planted pickled ``.bin`` beside the safetensors), ``adapters``
(IQA-Adapter presets), ``preference`` (PickScore, CLIPScore, HPSv2, ImageReward hub repositories),
and ``pyiqa`` (metric weights and their backbones;
``pyiqa:<metric>`` for one metric; see ``pyiqa_cache``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Mirror:
    """Where the mirror lives and the environment variables that make loaders read it."""

    root: Path
    env: dict[str, str]
    written: dict[str, object] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        """``os.environ`` plus the mirror's variables (for ``subprocess.run(env=...)``)."""
        return {**os.environ, **self.env, **extra}

    def ensure(self, *parts: str) -> Mirror:
        """Write the parts not written yet (a session fixture builds each part once, for the tests that need it)."""
        for part in parts:
            name, _, argument = part.partition(":")  # "pyiqa:topiq_nr" -> the pyiqa writer for one metric
            if name not in WRITERS:
                raise ValueError(f"unknown hub-mirror part {part!r}; known: {', '.join(WRITERS)}")
            if part not in self.written:
                args = (argument,) if argument else ()
                self.written[part] = WRITERS[name](self.root, self.env, *args)
        return self

    def apply(self, monkeypatch) -> Mirror:
        """Point this process's loaders at the mirror (for in-process tests of loaders that read the
        environment when called; pyiqa and huggingface_hub freeze theirs at import, so use a subprocess there)."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return self


def mirror_env(root: Path) -> dict[str, str]:
    root = Path(root)
    return {
        "HF_HOME": str(root / "hf"),
        "HF_HUB_CACHE": str(root / "hf" / "hub"),
        "TORCH_HOME": str(root / "torch"),
        "IQABENCH_ADAPTER_DIR": str(root / "iqa-adapter"),
        "HOME": str(root / "home"),  # ~/.cache/clip (the clip package) and ~/.cache/iqabench defaults
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "IQABENCH_OFFLINE": "1",
    }


def _hf(root: Path, env: dict[str, str]) -> object:
    from .hf_cache import write_pipelines

    return write_pipelines(Path(env["HF_HUB_CACHE"]))


def _hf_modern(root: Path, env: dict[str, str]) -> object:
    from .modern import write_modern

    return write_modern(Path(env["HF_HUB_CACHE"]))


def _clip(root: Path, env: dict[str, str], arch: str = "ViT-L-14") -> object:
    from .hf_cache import write_open_clip

    return write_open_clip(Path(env["HF_HUB_CACHE"]), arch, "openai")


def _tiny_decoders(root: Path, env: dict[str, str]) -> object:
    from .hf_cache import write_tiny_decoders

    return write_tiny_decoders(Path(env["HF_HUB_CACHE"]), pickle_marker=root / "tiny-decoder-unpickled")


def _torch(root: Path, env: dict[str, str]) -> object:
    from .torch_cache import write_torch_cache

    return write_torch_cache(Path(env["TORCH_HOME"]))


def _adapters(root: Path, env: dict[str, str]) -> object:
    from .adapter_dir import write_adapter_dir

    return write_adapter_dir(Path(env["IQABENCH_ADAPTER_DIR"]))


def _preference(root: Path, env: dict[str, str]) -> object:
    from .preference_cache import write_preference_cache

    return write_preference_cache(Path(env["HF_HUB_CACHE"]))


def _pyiqa(root: Path, env: dict[str, str], metric: str | None = None) -> object:
    from .pyiqa_cache import PYIQA_METRICS, write_pyiqa_mirror

    return write_pyiqa_mirror(root, [metric] if metric else PYIQA_METRICS)


#: Part name -> writer(root, env[, argument]) ("pyiqa:topiq_nr" passes "topiq_nr"); one line per part, so
#: parallel additions merge cleanly.
WRITERS: dict[str, Callable[..., object]] = {
    "hf": _hf,
    "hf-modern": _hf_modern,
    "clip": _clip,
    "torch": _torch,
    "tiny-decoders": _tiny_decoders,
    "adapters": _adapters,
    "pyiqa": _pyiqa,
    "preference": _preference,
}


def build_mirror(root: Path, parts: Iterable[str] = ()) -> Mirror:
    """A mirror under ``root`` with ``parts`` written now; :meth:`Mirror.ensure` writes more later."""
    return Mirror(Path(root), mirror_env(Path(root))).ensure(*parts)
