"""The text-image preference metrics' hub repositories (PickScore, CLIPScore, HPSv2) with random weights, real layout.

ImageReward's two repositories are written by :mod:`.imagereward_cache`.

Each repository gets what ``from_pretrained`` reads in the real one: ``config.json`` + ``model.safetensors`` of a
``CLIPModel`` (scaled down: transformers builds the model from the config, so the sizes need not be CLIP-H's),
and the processor files (``preprocessor_config.json``, ``tokenizer.json``, ``tokenizer_config.json``) written by
the image processor's and the tokenizer's ``save_pretrained``
with the real CLIP tokenizer vocabulary size and the real 224-px preprocessing. PickScore's model and its
processor live in two repositories, as on the hub.
"""

from __future__ import annotations

from pathlib import Path

import torch

from iqabench.metric_catalog import PREFERENCE_FILES

from .hf_cache import write_saved_pretrained, write_snapshot


def tiny_clip_model(seed: int):
    from transformers import CLIPConfig, CLIPModel

    from iqabench.support import tiny_models

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": tiny_models.clip_vocab_size(), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 224, "patch_size": 32},
        projection_dim=32,
    )
    return CLIPModel(config).eval()


def clip_processor():
    from transformers import CLIPImageProcessor, CLIPProcessor

    from iqabench.support import tiny_models

    return CLIPProcessor(image_processor=CLIPImageProcessor(crop_size=224, size=224),
                         tokenizer=tiny_models.tiny_clip_tokenizer())


#: open_clip's ViT-H-14 scaled down (same module names, so the same state-dict keys): the HPSv2 test process points
#: open_clip's "ViT-H-14" config at it (``use_tiny_vit_h14``); a real ViT-H-14 file would be 2 GB.
TINY_VIT_H14 = {"embed_dim": 32,
                "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 32},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def use_tiny_vit_h14() -> None:
    """Make ``open_clip.create_model("ViT-H-14")`` build :data:`TINY_VIT_H14` in this process."""
    import open_clip.factory

    open_clip.factory._MODEL_CONFIGS["ViT-H-14"] = TINY_VIT_H14


def write_hpsv2(cache: Path, seed: int = 0) -> Path:
    """``xswu/HPSv2`` with ``HPS_v2_compressed.pt`` and ``HPS_v2.1_compressed.pt``: ``torch.save({"state_dict":
    ...})`` of an open_clip ViT-H-14-layout model (fp16, as the "compressed" release is), random weights."""
    import tempfile

    import open_clip

    use_tiny_vit_h14()
    files = {}
    with tempfile.TemporaryDirectory(prefix="hub-mirror-") as scratch:
        for index, name in enumerate(("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt")):
            torch.manual_seed(seed * 7 + index)
            model = open_clip.create_model("ViT-H-14", pretrained=None)
            state = {k: v.half() for k, v in model.state_dict().items()}
            files[name] = Path(scratch) / name
            torch.save({"state_dict": state}, files[name])
        return write_snapshot(cache, "xswu/HPSv2", files)


def write_preference_cache(cache: Path, seed: int = 0) -> dict[str, Path]:
    """Every repository of :data:`iqabench.metric_catalog.PREFERENCE_FILES`: models where a metric reads a
    model, processors where it reads one."""
    from .imagereward_cache import write_imagereward

    written: dict[str, Path] = {"xswu/HPSv2": write_hpsv2(cache, seed), **write_imagereward(cache, seed)}
    for index, (_metric, repos) in enumerate(sorted(PREFERENCE_FILES.items())):
        for repo_id, files in repos:
            if repo_id in written:
                continue
            model = tiny_clip_model(seed * 101 + index)
            processor = clip_processor() if "preprocessor_config.json" in files else None

            def save(folder: Path, model=model, processor=processor, files=files) -> None:
                if "model.safetensors" in files:
                    model.save_pretrained(folder, safe_serialization=True)
                else:  # a processor repository still has the model's config.json (AutoProcessor reads it)
                    model.config.to_json_file(folder / "config.json")
                if processor is not None:  # the files as the hub has them, not transformers 5's processor_config.json
                    processor.image_processor.save_pretrained(folder)
                    processor.tokenizer.save_pretrained(folder)

            written[repo_id] = write_saved_pretrained(cache, repo_id, save)
    return written
