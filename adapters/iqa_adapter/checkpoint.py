"""IQA-Adapter files: the authors' released layout, our metadata, presets and where weights live.

Released files (``.bin`` or ``.safetensors``) hold ``image_proj.*`` and
``ip_adapter.<index>.to_{k,v}_ip.weight``, where ``<index>`` is the position of
the processor in ``unet.attn_processors`` order (down blocks, up blocks, mid
block; only cross-attention layers have weights, so only odd indices appear).
They do not say which metrics, stats or base model they were trained with;
ours write that into the safetensors metadata (``iqabench.adapter`` = the
:class:`AdapterConfig` as JSON), and presets supply it for the authors' files.

Safety: ``.safetensors`` is read with safetensors; ``.bin`` only with
``torch.load(weights_only=True)``, which refuses pickles that construct
arbitrary objects. We turn that refusal into one clear sentence.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from iqabench.contracts.needs import Need, declare

from .adapter import ATTN_PREFIX, PROJ_PREFIX, AdapterConfig, IQAAdapter
from .conditioning import QualityEncoding, load_stats, select_stats
from .projection import CheckpointError, infer_projection_config

METADATA_KEY = "iqabench.adapter"
FORMAT_VERSION = "1"
ENV_DIR = "IQABENCH_ADAPTER_DIR"
DEFAULT_DIR = Path("~/.cache/iqabench/iqa-adapter")
#: The authors' release folder, as the README of https://github.com/X1716/IQA-Adapter links it ("The weights for
#: the IQA-Adapter can be downloaded from here (Google Drive)"); ``$IQABENCH_ADAPTER_RELEASE`` overrides it.
RELEASE_FOLDER = "https://drive.google.com/drive/folders/1jVYM96nbk0pUV4HSHiUzWGlTSLg-dv5h"
RELEASE_URL = f"{RELEASE_FOLDER} (the release linked from github.com/X1716/IQA-Adapter)"


@dataclass(frozen=True)
class Preset:
    """A released adapter: which metrics (in input order) and which file, trained on SDXL with CC3M stats.

    The file stems are our naming of the authors' downloads (the release folder
    is on Google Drive and its names were not verifiable offline); ``file=`` on
    the spec overrides them.
    """

    metrics: tuple[str, ...]
    file_stem: str
    n_tokens: int = 2
    projection: str = "linear"
    base: str = "sdxl"


PRESETS: dict[str, Preset] = {
    "topiq": Preset(("topiq_nr",), "iqa_adapter_topiq_nr"),
    "hyperiqa": Preset(("hyperiqa",), "iqa_adapter_hyperiqa"),
    "topiq+laion_aes": Preset(("topiq_nr", "laion_aes"), "iqa_adapter_topiq_nr+laion_aes"),
}


def weights_dir(option: str | Path | None = None) -> Path:
    """``weights_dir=`` option, else ``$IQABENCH_ADAPTER_DIR``, else ``~/.cache/iqabench/iqa-adapter``."""
    chosen = option or os.environ.get(ENV_DIR) or DEFAULT_DIR
    return Path(chosen).expanduser()


def preset_file(name: str, directory: str | Path | None = None, file: str | None = None) -> Path:
    """The local file of a preset, or :class:`WeightsMissingError` saying where to put which file."""
    if name not in PRESETS:
        raise CheckpointError(f"unknown IQA-Adapter preset {name!r}: choose one of {', '.join(PRESETS)} "
                              "or give a checkpoint path")
    folder = weights_dir(directory)
    names = [file] if file else [PRESETS[name].file_stem + ext for ext in (".safetensors", ".bin")]
    for candidate in names:
        path = folder / candidate
        if path.is_file():
            declare(_release_need(name, path, True))
            return path
    message = (f"IQA-Adapter preset {name!r} needs {' or '.join(names)} from {RELEASE_URL} in {folder} "
               f"(set ${ENV_DIR} or the spec option weights_dir= to use another folder).")
    declare(_release_need(name, folder / names[0], False, message, names))
    return folder / names[0]  # reached only while the preflight collects needs: the file it will ask for


#: ``$IQABENCH_ADAPTER_RELEASE``: the Google Drive folder of the authors' release, for ``iqabench fetch``.
RELEASE_ENV = "IQABENCH_ADAPTER_RELEASE"


def _release_need(name: str, path: Path, present: bool, message: str = "", names: list[str] | None = None) -> Need:
    """The preset file as a need: fetched from the release folder on Google Drive with gdown (the
    ``iqabench[fetch]`` extra); ``files`` are the names the release may use for it (the loader accepts either).

    Without gdown (and without a mirror of the release, ``$IQABENCH_URL_MIRROR``) the need is one to provide by
    hand, saying how to make it fetchable: the preflight and ``fetch`` know it before any other download starts,
    instead of promising a download that would fail after the others.
    """
    source = os.environ.get(RELEASE_ENV) or RELEASE_FOLDER
    kind = "gdrive"
    if not present and not os.environ.get("IQABENCH_URL_MIRROR") and importlib.util.find_spec("gdown") is None:
        kind = "manual"
        source = (f"{source} on Google Drive: `pip install iqabench[fetch]` (gdown) so that `iqabench fetch` "
                  "downloads it, or download it by hand")
    return Need(f"IQA-Adapter preset {name}", path, kind, source, present,
                size=path.stat().st_size if present else None, filename=path.name, message=message,
                files=tuple(names or [path.name]))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif torch.is_tensor(obj):
        flat[prefix[:-1]] = obj
    else:
        raise CheckpointError(f"checkpoint entry {prefix[:-1]!r} is a {type(obj).__name__}, not a tensor")
    return flat


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dtypes(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Floating-point weights only: integer tensors are refused, float64 ones cast to float32 with a message.

    An int8 file is a quantised checkpoint that loading would silently turn
    into garbage weights (the adapter's layers are float); float64 is harmless
    but doubles the memory and is usually an export slip, so it is said aloud.
    """
    wrong = {k: v.dtype for k, v in tensors.items() if not v.dtype.is_floating_point}
    if wrong:
        key, dtype = next(iter(wrong.items()))
        name = str(dtype).replace("torch.", "")
        raise CheckpointError(
            f"{path} holds {len(wrong)} non-floating-point tensor(s) (e.g. {key!r} is {name}); "
            "IQA-Adapter weights must be float32, float16 or bfloat16 (quantised checkpoints are not supported)"
        )
    cast = [k for k, v in tensors.items() if v.dtype not in _FLOAT_DTYPES]
    if cast:
        logging.getLogger("iqabench").warning(
            "%s: %d tensor(s) are %s; cast to float32 (e.g. %r)", path, len(cast),
            str(tensors[cast[0]].dtype).replace("torch.", ""), cast[0])
        tensors = {k: (v.float() if k in cast else v) for k, v in tensors.items()}
    return tensors


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], AdapterConfig | None]:
    """Tensors (flat keys) and, when the file carries our metadata, the adapter config."""
    tensors, config = _read_checkpoint(Path(path))
    return check_dtypes(tensors, Path(path)), config


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], AdapterConfig | None]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IQA-Adapter checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
        config = None
        if METADATA_KEY in metadata:
            try:
                config = AdapterConfig.from_json(metadata[METADATA_KEY])
            except CheckpointError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(f"{path} has unreadable {METADATA_KEY!r} metadata ({exc!r}); "
                                      "rewrite it, or state the adapter's metrics on the spec") from exc
        return tensors, config
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} contains pickled objects other than tensors, and iqabench never unpickles those; "
            "convert it to .safetensors in a trusted environment"
        ) from exc
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({exc})") from exc
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, expected a dict of tensors")
    return _flatten(payload), None


def infer_config(tensors: Mapping[str, torch.Tensor], *, metrics: tuple[str, ...] | None = None,
                 stored: AdapterConfig | None = None, **overrides: Any) -> AdapterConfig:
    """Adapter config from tensor shapes plus what the user or the metadata says about metrics.

    Shapes give the projection type, n_tokens and the input width; the input
    width plus the number of metrics gives the flag and positional encoding.
    Anything stated that contradicts the shapes is an error, not a guess.
    """
    proj_state = {k[len(PROJ_PREFIX):]: v for k, v in tensors.items() if k.startswith(PROJ_PREFIX)}
    if not proj_state or not any(k.startswith(ATTN_PREFIX) for k in tensors):
        raise CheckpointError("checkpoint lacks image_proj.* or ip_adapter.* tensors; it is not an IQA-Adapter file")
    shape = infer_projection_config(proj_state)
    if metrics is None and stored is not None:
        metrics = stored.metrics
    if not metrics:
        raise CheckpointError(
            "this checkpoint does not say which metrics it was trained with; state them, e.g. "
            "metrics=topiq_nr+laion_aes"
        )
    encoding = QualityEncoding.infer(shape.input_dim, len(metrics))
    base = stored or AdapterConfig(tuple(metrics))
    config = base.with_updates(**overrides)
    config = config.with_updates(metrics=tuple(metrics), n_tokens=shape.n_tokens, projection=shape.kind,
                                 mlp_inner_dim=shape.inner_dim, use_flag=encoding.use_flag,
                                 pos_frequencies=encoding.pos_frequencies)
    for field_name in ("n_tokens", "projection", "use_flag", "pos_frequencies"):
        stated = overrides.get(field_name)
        if stated is not None and stated != getattr(config, field_name):
            raise CheckpointError(f"{field_name}={stated!r} contradicts the checkpoint's tensors "
                                  f"({field_name}={getattr(config, field_name)!r})")
    if not config.stats:
        config = config.with_updates(stats={s.name: s for s in select_stats(config.metrics, load_stats())})
    return config


def load_adapter(path: str | Path, unet: torch.nn.Module, **overrides: Any) -> IQAAdapter:
    """Build an :class:`IQAAdapter` on ``unet`` from a released or iqabench checkpoint."""
    tensors, stored = read_checkpoint(path)
    config = infer_config(tensors, stored=stored, **overrides)
    cross_dim = int(unet.config.cross_attention_dim)
    token_dim = int(tensors[PROJ_PREFIX + "norm.weight"].shape[0])
    if token_dim != cross_dim:
        raise CheckpointError(
            f"{path} makes {token_dim}-wide quality tokens but the base model's cross-attention width is "
            f"{cross_dim}; use the base model it was trained on ({config.base or 'unknown'})"
        )
    adapter = IQAAdapter(config, unet, init_from_base=False)
    adapter.load_released_state_dict(tensors)
    return adapter


def save_adapter(adapter: IQAAdapter, path: str | Path, *, step: int | None = None) -> Path:
    """Write the released layout as safetensors, plus our config in the metadata (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = adapter.config if step is None else adapter.config.with_updates(step=step)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.released_state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: config.to_json(),
                                           "iqabench.format_version": FORMAT_VERSION})
    os.replace(tmp, path)
    return path
