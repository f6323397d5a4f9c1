"""The one seam through which every checkpoint file is read: tensors only, never code.

pyiqa (``load_pretrained_network``, clipiqa+, liqe, brisque ...), ``torch.hub.load_state_dict_from_url`` (the
torchvision backbones of lpips / dists / dbcnn), torch-fidelity and OpenAI CLIP all call
``torch.load(..., weights_only=False)``: a file planted in one of their caches runs code when the metric is
built. :func:`install` replaces ``torch.load`` process-wide by :func:`load_checkpoint`, which always loads with
``weights_only=True`` and refuses anything that is not plain tensors (dicts, lists, numbers) with one sentence
naming the file. It is installed when iqabench builds a metric or a generator, not at ``import iqabench``.

Two more places read whole programs rather than tensors, and are closed here too:

- ``torch.jit.load`` would run a TorchScript archive's code. OpenAI CLIP files (``ViT-L-14.pt`` ...) are such
  archives; the CLIP loaders (``clip.load`` and pyiqa's copy) try ``torch.jit.load`` first and fall back to
  ``torch.load`` on ``RuntimeError``. The patched ``torch.jit.load`` raises that error, and ``load_checkpoint``
  reads the archive's tensors with a restricted unpickler (:func:`read_torchscript_tensors`), keeping only the
  names the archive declares as parameters or buffers. The CLIP loaders then rebuild the model from that state
  dict with their own ``build_model``.
- The CLIP loaders check a cached file's SHA-256 against OpenAI's and re-download on mismatch. Since the file
  is now only read as tensors, a mismatch can no longer run code; iqabench uses the cached file as it is (a
  re-exported copy, or the test mirror's scaled-down random CLIP) and only downloads when it is absent.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import sys
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..contracts.errors import UserError

_LOCK = threading.Lock()
_ORIGINAL: dict[str, Any] = {}


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """A cached file holds more than plain tensors. The message is one sentence naming the file.

    A ``UserError`` (the file on the user's disk is the problem, so the CLI prints the sentence) and still a
    ``pickle.UnpicklingError`` for callers that catch the loader's own error."""


def refusal(path: object) -> str:
    return (f"{path} holds pickled objects other than tensors, and iqabench never unpickles a cached file; "
            "delete it and download it again from its official source (or convert it to .safetensors on a "
            "trusted machine)")


def _name_of(f: object) -> str:
    if isinstance(f, (str, os.PathLike)):
        return str(f)
    return str(getattr(f, "name", "<file object>"))


def load_checkpoint(f: Any, map_location: Any = None, pickle_module: Any = None, *, weights_only: Any = None,
                    mmap: Any = None, **pickle_load_args: Any) -> Any:
    """``torch.load`` with ``weights_only=True`` whatever the caller asked; TorchScript archives give their tensors.

    Keeps ``torch.load``'s signature so it can stand in for it in every library.
    """
    del pickle_module, weights_only  # an explicit pickle module or weights_only=False is exactly what we refuse
    original = _ORIGINAL.get("torch.load", torch.load)
    if _is_torchscript(f):
        return read_torchscript_tensors(f, map_location)
    try:
        return original(f, map_location=map_location, weights_only=True, mmap=mmap, **pickle_load_args)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(refusal(_name_of(f))) from exc


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file (``.safetensors`` or a plain-tensor ``torch.save`` file) into a state dict.

    The loader for iqabench's own folders (adapter dir, LoRA folder, Inception, detectors): errors are one
    sentence naming the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UnsafeCheckpointError(
                f"{path} is not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                "delete it and download or export it again") from None
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors; "
                                    "delete it and download or export it again")
    return state


def check_file(path: str | Path) -> str | None:
    """``None`` when :func:`load_checkpoint` would read ``path``, else its one-sentence refusal; nothing is unpickled.

    For weight-status reports (``list metrics``): a ``torch.save`` zip is checked by disassembling its pickle
    (``torch.serialization.get_unsafe_globals_in_checkpoint``), a TorchScript archive by the tensor-only reader,
    a legacy (pre-1.6) file by a ``weights_only=True`` load, which runs no code either. Results are cached by
    (path, mtime, size), so listing every metric reads each file once per process.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return None  # tensors by construction; a damaged file fails with one sentence when loaded
    stat = path.stat()
    return _check_file_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _check_file_cached(path: str, mtime_ns: int, size: int) -> str | None:
    del mtime_ns, size  # the cache key: a replaced file is checked again
    try:
        if _is_torchscript(path):
            read_torchscript_tensors(path, "cpu")
            return None
        if zipfile.is_zipfile(path):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            return refusal(path) if unsafe else None
        _ORIGINAL.get("torch.load", torch.load)(path, map_location="cpu", weights_only=True)
    except UnsafeCheckpointError as exc:
        return str(exc)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):
            return refusal(path)
        return f"{path} is not a readable checkpoint ({first}); delete it and download it again"
    return None


# -- TorchScript archives: tensors without running code ------------------------------------------------------------
def _is_torchscript(f: Any) -> bool:
    """True for a zip written by ``torch.jit.save`` (it has ``constants.pkl`` or ``code/``), false otherwise."""
    try:
        if isinstance(f, (str, os.PathLike)):
            if not zipfile.is_zipfile(f):
                return False
            with zipfile.ZipFile(f) as archive:
                names = archive.namelist()
        else:
            if not (hasattr(f, "seek") and hasattr(f, "read")):
                return False
            start = f.tell()
            try:
                if not zipfile.is_zipfile(f):
                    return False
                f.seek(start)
                with zipfile.ZipFile(f) as archive:
                    names = archive.namelist()
            finally:
                f.seek(start)
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


class _ScriptObject:
    """Stand-in for a TorchScript class instance: records its state, runs nothing."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


@functools.cache
def _script_class(qualified_name: str) -> type:
    return type("ScriptObject", (_ScriptObject,), {"qualified_name": qualified_name})


def _passthrough(value: Any, *_: Any) -> Any:
    return value


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding, storages, OrderedDict and inert stand-ins for ``__torch__`` classes."""

    def __init__(self, data: io.BytesIO, archive: zipfile.ZipFile, root: str, map_location: Any):
        super().__init__(data)
        self._archive, self._root, self._map_location = archive, root, map_location

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _script_class(f"{module}.{name}")
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return torch._utils._rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)
        if module == "torch.jit._pickle":
            return _passthrough
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, saved_id: Any) -> Any:
        kind, storage_type, key, _location, _numel = saved_id
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        # ``_dtype``: the legacy storage classes' dtype without their deprecation warning.
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else getattr(storage_type, "_dtype",
                                                                                  torch.float32)
        raw = self._archive.read(f"{self._root}/data/{key}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


_DECLARED = re.compile(r"class (\w+)\(Module\):\s*\n\s*__parameters__ = \[([^\]]*)\]\s*\n\s*__buffers__ = \[([^\]]*)\]")


def _declared_tensors(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """Parameter and buffer names per class, read as text from the archive's ``code/`` (never executed)."""
    declared: dict[str, set[str]] = {}
    for name in archive.namelist():
        if not (name.startswith(f"{root}/code/") and name.endswith(".py")):
            continue
        module = name[len(f"{root}/code/"):-3].replace("/", ".")
        for cls, params, buffers in _DECLARED.findall(archive.read(name).decode("utf-8", "replace")):
            declared[f"{module}.{cls}"] = set(re.findall(r"\"(\w+)\"", params + buffers))
    return declared


def read_torchscript_tensors(f: Any, map_location: Any = None) -> dict[str, torch.Tensor]:
    """The state dict (parameters and buffers) of a ``torch.jit.save`` archive, read without running its code."""
    with zipfile.ZipFile(f) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise UnsafeCheckpointError(f"{_name_of(f)} is a zip archive without data.pkl; delete it and download "
                                        "it again from its official source")
        root = pickles[0].split("/")[0]
        try:
            obj = _TensorOnlyUnpickler(io.BytesIO(archive.read(pickles[0])), archive, root, map_location).load()
        except (pickle.UnpicklingError, AttributeError, ValueError, TypeError) as exc:
            raise UnsafeCheckpointError(refusal(_name_of(f))) from exc
        declared = _declared_tensors(archive, root)

    state: OrderedDict[str, torch.Tensor] = OrderedDict()

    def walk(node: Any, prefix: str) -> None:
        attributes = node.__dict__.get("_state", node.__dict__)
        if not isinstance(attributes, dict):
            return
        allowed = declared.get(node.qualified_name.removeprefix("__torch__."))
        for key, value in attributes.items():
            if isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, torch.Tensor) and (allowed is None or key in allowed):
                state[f"{prefix}{key}"] = value if map_location is None else value.to(_device(map_location))

    if isinstance(obj, _ScriptObject):
        walk(obj, "")
    return state


def _device(map_location: Any) -> Any:
    return map_location if isinstance(map_location, (str, torch.device)) else "cpu"


# -- installing the seam -------------------------------------------------------------------------------------------
def _refuse_torchscript(f: Any, *args: Any, **kwargs: Any) -> Any:
    # RuntimeError is what the CLIP loaders catch to fall back to torch.load, which reads the tensors.
    raise RuntimeError(f"iqabench does not run TorchScript archives such as {_name_of(f)}; read as tensors instead")


def _cached_clip_file(original_download: Any) -> Any:
    @functools.wraps(original_download)
    def download(url: str, root: str) -> str:
        target = os.path.join(root, os.path.basename(url))
        if os.path.isfile(target):
            return target
        if _offline():
            raise FileNotFoundError(f"CLIP weights {os.path.basename(url)} are not in {root} and offline mode is on; "
                                    f"download {url} into that folder on a connected machine")
        return original_download(url, root)

    download._iqabench_safe = True  # type: ignore[attr-defined]
    return download


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "IQABENCH_OFFLINE"))


def install() -> None:
    """Route every checkpoint read of this process through :func:`load_checkpoint` (idempotent).

    The CLIP downloads are patched once pyiqa (or clip) is imported; call it again after importing them.
    """
    with _LOCK:
        if "torch.load" not in _ORIGINAL:
            _ORIGINAL["torch.load"] = torch.load
            _ORIGINAL["torch.jit.load"] = torch.jit.load
            torch.load = load_checkpoint
            torch.serialization.load = load_checkpoint  # for callers that name the module
            torch.jit.load = _refuse_torchscript
        for module_name in ("clip.clip", "pyiqa.archs.clip_model"):
            _patch_clip_download(module_name)
    from . import hub_code

    hub_code.install()  # code, not tensors: torch.hub.load imports a cached hubconf.py only with the opt-in


def import_clip_loaders() -> None:
    """Import the CLIP loaders a metric may use (pyiqa's copy and the optional ``clip`` package), quietly.

    Called where a metric is about to be built, before :func:`install`, so that their downloads are patched:
    pyiqa's laion_aes imports ``clip`` only inside its constructor, after ``install`` has run. ``clip`` prints
    setuptools' pkg_resources deprecation warning on import; it is silenced here, as pyiqa itself does.
    """
    import importlib

    for module_name in ("pyiqa.archs.clip_model", "clip.clip"):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API",
                                        category=UserWarning)
                importlib.import_module(module_name)
        except ImportError:  # the optional `clip` package is absent: nothing to patch
            pass


def _patch_clip_download(module_name: str) -> None:
    # Only once its package is imported (a metric is being built): installing never imports pyiqa or clip itself.
    # Importing `clip` here would also print setuptools' pkg_resources deprecation warning ahead of a CLI's
    # `error:` line; pyiqa imports clip lazily (in the CLIP-based archs) and silences that warning itself.
    if module_name.split(".")[0] not in sys.modules:
        return
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=UserWarning)
            module = importlib.import_module(module_name)
    except ImportError:  # the optional `clip` package is absent: nothing to patch
        return
    download = getattr(module, "_download", None)
    if download is not None and not getattr(download, "_iqabench_safe", False):
        module._download = _cached_clip_file(download)


def installed() -> bool:
    return "torch.load" in _ORIGINAL
