"""Which hub files each text-image preference metric reads (PickScore, CLIPScore, HPSv2), where, and if they are there.

The same :class:`~.pyiqa_weights.WeightFile` records the pyiqa metrics use, so ``iqabench list metrics`` and a
``fetch`` of a run's files list them the same way: one row per file in the Hugging Face hub cache folder
``from_pretrained`` reads. A model file may be ``model.safetensors`` or, for repositories that only have the
pickled one, ``pytorch_model.bin`` (read tensors-only through :mod:`iqabench.safe_load`).
"""

from __future__ import annotations

from pathlib import Path

from .pyiqa_weights import WeightFile

#: metric -> (repository, files) read by its factory, in the order they are loaded.
MODEL_FILES = ("config.json", "model.safetensors")
PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
HUB_FILES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
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
}


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
    return [hub_file(repo, f) for repo, files in HUB_FILES[name] for f in files]


def preference_weights_status(name: str) -> tuple[bool, str]:
    """(present, detail) for ``iqabench list metrics`` and the offline check before a run."""
    files = preference_weight_files(name)
    missing = [f for f in files if f.found() is None]
    if missing:
        return False, "; ".join(f.missing_sentence() for f in missing)
    refused = [reason for f in files if (reason := f.refused())]
    if refused:
        return False, "; ".join(refused)
    return True, ", ".join(sorted({f.what.removeprefix("Hugging Face ") for f in files}))
