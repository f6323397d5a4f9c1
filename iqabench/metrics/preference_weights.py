"""Which hub files each text-image preference metric reads (PickScore, CLIPScore, HPSv2, ImageReward) and if present.

The same :class:`~.pyiqa_weights.WeightFile` records the pyiqa metrics use, so ``iqabench list metrics`` and a
``fetch`` of a run's files list them the same way: one row per file in the Hugging Face hub cache folder
``from_pretrained`` reads. A model file may be ``model.safetensors`` or, for repositories that only have the
pickled one, ``pytorch_model.bin`` (read tensors-only through :mod:`iqabench.io.safe_load`).
"""

from __future__ import annotations

from pathlib import Path

from ..metric_catalog import PREFERENCE_FILES  # metric -> (repository, files) its factory reads, in load order
from .pyiqa_weights import WeightFile, files_problem


class HubFile(WeightFile):
    """A hub file: configs and tokenizers are JSON/text (nothing to unpickle), only model files are checked."""

    def refused(self) -> str | None:
        found = self.found()
        if found is None or found.suffix in (".json", ".txt", ".safetensors"):
            return None
        return super().refused()


def hub_file(repo_id: str, filename: str) -> WeightFile:
    """``filename`` of ``repo_id`` in the hub cache (the snapshot ``refs/main`` points at)."""
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> Path | None:
        found = try_to_load_from_cache(repo_id, name)
        return Path(found) if isinstance(found, str) else None

    folder = Path(hf_constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "<commit>"
    path = cached(filename) or folder / filename
    alternatives = ()
    if filename == "model.safetensors":
        bin_file = cached("pytorch_model.bin")
        alternatives = (bin_file,) if bin_file else ()
    return HubFile(path, f"Hugging Face {repo_id}",
                   f"run `iqabench fetch` (or `hf download {repo_id} {filename}`) on a connected machine and copy "
                   "the hub cache", alternatives, kind="hub-file", source=repo_id)


def preference_weight_files(name: str) -> list[WeightFile]:
    """Every file building preference metric ``name`` reads."""
    return [hub_file(repo, f) for repo, files in PREFERENCE_FILES[name] for f in files]


def preference_weights_status(name: str) -> tuple[bool, str]:
    """(present, detail) for ``iqabench list metrics`` and the offline check before a run."""
    files = preference_weight_files(name)
    problem = files_problem(files)
    if problem:
        return False, problem
    return True, ", ".join(sorted({f.what.removeprefix("Hugging Face ") for f in files}))
