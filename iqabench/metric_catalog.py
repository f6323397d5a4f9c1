"""The pyiqa metric catalog without importing pyiqa or torch: names, NR/FR, direction, range, and weight files.

``iqabench list metrics`` and a metric-name check used to import every pyiqa architecture (15 s; q_align alone
12.7 s). Here:

* the metadata is pyiqa's own ``default_model_configs.py``, read as a file (it is a plain dict) without
  running ``pyiqa/__init__``;
* the files each metric's build reads (:mod:`iqabench.metrics.pyiqa_weights`, which imports the arch
  modules) are computed once per pyiqa version into a table of *portable* entries (a root such as ``pyiqa``
  or ``hf`` plus a relative name), shipped for the pinned pyiqa version as ``iqabench/data/pyiqa_files.json``
  and otherwise written to ``~/.cache/iqabench`` on first use (JSON: nothing is unpickled or imported);
* each entry is resolved against the environment *now* (``TORCH_HOME``, ``HF_HOME``, ``HOME``), as the loaders
  themselves do, so the status is a few ``stat`` calls.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

SHIPPED_TABLE = Path(__file__).resolve().parent / "data" / "pyiqa_files.json"
EXCLUDED = ("fid", "inception_score")  # dataset-level, not per-image: not registered as metrics

# -- the prompt-aware preference metrics iqabench registers itself (iqabench.metrics.preference) ---------------------
MODEL_FILES = ("config.json", "model.safetensors")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
#: metric -> (repository, files) its factory reads, in load order (kept here, torch-free, for the fast listing)
PREFERENCE_FILES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # PickScore (Kirstain et al. 2023): the released model with the processor of the CLIP it was fine-tuned from,
    # exactly as the model card and X1716/IQA-Adapter metric_calculation/calc_hps_scores_CC3M.py load them.
    "pickscore": (("yuvalkirstain/PickScore_v1", MODEL_FILES),
                  ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ("config.json", *PROCESSOR_FILES))),
    # CLIPScore (Hessel et al. 2021): OpenAI CLIP ViT-B/32, the model of the paper and its reference code.
    "clipscore": (("openai/clip-vit-base-patch32", (*MODEL_FILES, *PROCESSOR_FILES)),),
    # HPSv2 (Wu et al. 2023): open_clip ViT-H-14 fine-tuned; hpsv2.score downloads this file from xswu/HPSv2.
    "hpsv2": (("xswu/HPSv2", ("HPS_v2_compressed.pt",)),),
    "hpsv2.1": (("xswu/HPSv2", ("HPS_v2.1_compressed.pt",)),),
    # torchmetrics' CLIPScore default model (ViT-L/14) for the 100 x max(cos, 0) convention.
    "clipscore_100": (("openai/clip-vit-large-patch14", (*MODEL_FILES, *PROCESSOR_FILES)),),
    # ImageReward (Xu et al. 2023): the BLIP reward model's config and weights (what ImageReward.load downloads),
    # then the tokenizer its BLIP loads, bert-base-uncased (vocab.txt + tokenizer_config.json, as BertTokenizer).
    "imagereward": (("THUDM/ImageReward", ("med_config.json", "ImageReward.pt")),
                    ("bert-base-uncased", ("tokenizer_config.json", "vocab.txt"))),
}
#: their score ranges as listed (None: unbounded logits)
PREFERENCE_RANGES: dict[str, str | None] = {"pickscore": None, "clipscore": "0, 2.5", "clipscore_100": "0, 100",
                                            "hpsv2": "~0.2, ~0.35", "hpsv2.1": "~0.2, ~0.35",
                                            "imagereward": None}
#: parameterised metric names registered on first use (``ipce:<checkpoint>``; see metrics.registration)
FAMILY_PREFIXES = ("ipce:",)


def known_names() -> list[str]:
    """Every metric name iqabench knows without importing model code: pyiqa's plus the preference metrics."""
    return list(dict.fromkeys([*pyiqa_configs(), *PREFERENCE_FILES]))


def is_family_name(name: str) -> bool:
    """``ipce:<file>``-style names, registered when first used."""
    return any(name.startswith(p) and len(name) > len(p) for p in FAMILY_PREFIXES)


def pyiqa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyiqa")
    except PackageNotFoundError:  # pragma: no cover
        return ""


@lru_cache(maxsize=1)
def pyiqa_configs() -> dict[str, dict[str, Any]]:
    """pyiqa's ``DEFAULT_CONFIGS``, read from its file without importing the pyiqa package (plain data)."""
    spec = importlib.util.find_spec("pyiqa")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "default_model_configs.py"
    namespace: dict[str, Any] = {"OrderedDict": OrderedDict}
    source = path.read_text("utf-8").replace("from collections import OrderedDict", "")
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - pyiqa's own installed source, as import does
    return {k: v for k, v in namespace["DEFAULT_CONFIGS"].items() if k not in EXCLUDED}


def metadata(name: str) -> dict[str, Any]:
    """mode (NR/FR), lower_better, score_range of a pyiqa metric, from its config (a preference metric: its own)."""
    if name in PREFERENCE_FILES:
        return {"mode": "NR", "lower_better": False, "score_range": PREFERENCE_RANGES[name], "prompt_aware": True}
    config = pyiqa_configs()[name]
    return {"mode": "FR" if config.get("metric_mode") == "FR" else "NR",
            "lower_better": bool(config.get("lower_better", False)), "score_range": config.get("score_range")}


# -- where the loaders look, from the environment now ------------------------------------------------------------
def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (``$TORCH_HOME/hub``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def _hub_file(repo_id: str, filename: str) -> Path:
    """The cached file of ``repo_id`` at its ``main`` ref (what ``try_to_load_from_cache`` answers)."""
    from .io.hub_files import hub_cache_dir

    repo = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    commit = ref.read_text().strip() if ref.is_file() else "<commit>"
    return repo / "snapshots" / commit / filename


def resolve(entry: dict[str, Any]) -> list[Path]:
    """The path(s) a portable entry stands for now: the file, then the alternatives the loader accepts."""
    root, name = entry["root"], entry["name"]
    if root == "hf":
        return [_hub_file(entry["repo"], n) for n in (name, *entry.get("alternatives", ()))]
    base = {"pyiqa": torch_hub_dir() / "pyiqa", "torch_checkpoints": torch_hub_dir() / "checkpoints",
            "torch_clip": torch_hub_dir() / "clip", "clip_home": Path(os.path.expanduser("~/.cache/clip"))}[root]
    return [base / name]


# -- the table of files per metric ---------------------------------------------------------------------------
def _portable(file: Any) -> dict[str, Any]:
    """A :class:`~iqabench.metrics.pyiqa_weights.WeightFile` as root + name: the table holds for any cache."""
    from .metrics.pyiqa_weights import pyiqa_cache_dir

    entry: dict[str, Any] = {"what": file.what, "kind": file.kind, "source": file.source, "name": file.path.name}
    if file.kind == "hub-file":
        entry.update(root="hf", repo=file.source, alternatives=[p.name for p in file.alternatives])
        return entry
    parent = file.path.parent
    hub = torch_hub_dir()
    roots = {pyiqa_cache_dir(): "pyiqa", hub / "checkpoints": "torch_checkpoints", hub / "clip": "torch_clip",
             Path(os.path.expanduser("~/.cache/clip")): "clip_home"}
    entry["root"] = roots[parent]
    return entry


def generate(names: Iterable[str]) -> dict[str, Any]:
    """The table for ``names`` from the real loaders' tables (imports pyiqa's arch modules: slow, done once)."""
    from .metrics.pyiqa_weights import pyiqa_weight_files

    metrics: dict[str, Any] = {}
    for name in names:
        try:
            files, verified = pyiqa_weight_files(name)
        except ImportError as exc:
            metrics[name] = {"error": f"pyiqa cannot import its arch ({exc})"}
            continue
        except LookupError as exc:
            metrics[name] = {"unverified": str(exc), "files": []}
            continue
        metrics[name] = {"files": [_portable(f) for f in files], **({} if verified else {"unverified": "backbones"})}
    return {"pyiqa": pyiqa_version(), "metrics": metrics}


def _user_table_path() -> Path:
    return Path(os.path.expanduser("~/.cache/iqabench")) / f"pyiqa_files-{pyiqa_version()}.json"


@lru_cache(maxsize=1)
def file_table() -> dict[str, Any]:
    """metric -> its files' portable entries, for the installed pyiqa (shipped, cached, or computed now)."""
    for path in (SHIPPED_TABLE, _user_table_path()):
        try:
            table = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if table.get("pyiqa") == pyiqa_version():
            return table["metrics"]
    table = generate(pyiqa_configs())
    try:
        path = _user_table_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=1, sort_keys=True), "utf-8")
    except OSError:  # a read-only home: computed again next time
        pass
    return table["metrics"]


def weights_status(name: str) -> tuple[bool | None, list[dict[str, Any]]]:
    """(present, entries missing): True when every file is there, None when iqabench cannot tell."""
    if name in PREFERENCE_FILES:
        absent = [{"path": str(path), "source": f"hub {repo}"} for repo, files in PREFERENCE_FILES[name]
                  for f in files if not (path := _hub_file(repo, f)).is_file()]
        return (not absent), absent
    entry = file_table().get(name)
    if entry is None or "error" in entry:
        return None, []
    missing = [e for e in entry["files"] if _found(e) is None]
    if missing:
        return False, missing
    refused = [{**e, "refused": reason} for e in entry["files"] if (reason := _refusal(_found(e)))]
    if refused:
        return False, refused
    return (None if "unverified" in entry else True), []


def _found(entry: dict[str, Any]) -> Path | None:
    return next((p for p in resolve(entry) if p.is_file()), None)


def _refusal(path: Path | None) -> str | None:
    """safe_load's refusal of a present non-safetensors file (a planted pickle is not "present"); this check
    imports torch, so only a listing that finds such files pays for it."""
    if path is None or path.suffix == ".safetensors":
        return None
    from .io.safe_load import check_file

    return check_file(path)


def needs(name: str) -> list[Any] | None:
    """Every file building pyiqa metric ``name`` reads, as :class:`~iqabench.contracts.needs.Need`s, from the table (no
    arch module imported: the preflight stays cheap); None when the table cannot tell (the loaders' own answer
    is then computed)."""
    from .contracts.needs import Need

    entry = file_table().get(name)
    if entry is None or "error" in entry:
        return None
    out = []
    for file in entry["files"]:
        found = _found(file)
        refused = _refusal(found)
        what = f"{file['what']} of {name}" + (f", refused: {refused}" if refused else "")
        destination = found or resolve(file)[0]
        out.append(Need(what, destination, file["kind"], _endpoint(file["source"]), found is not None and not refused,
                        size=found.stat().st_size if found is not None else None,
                        filename=file["name"] if file["kind"] == "hub-file" else None,
                        message=refused or f"{file['what']} {destination.name} is not in {destination.parent}"))
    return out


def _endpoint(url: str) -> str:
    """pyiqa's weights live in a hub repository: under ``HF_ENDPOINT`` when one is set, as pyiqa fetches them."""
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    default = "https://huggingface.co/"
    return f"{endpoint}/{url[len(default):]}" if endpoint and url.startswith(default) else url
