"""ImageReward's hub files with random weights in the released layout: ``THUDM/ImageReward`` and ``bert-base-uncased``.

``ImageReward.pt`` is what the official training code saves, ``torch.save(model.state_dict())`` of
``ImageReward`` (``blip`` = BLIP_Pretrain with ``visual_encoder`` / ``text_encoder`` / ``vision_proj`` /
``text_proj``, then ``mlp.layers``). Its key names and shapes are written here *as data*, read off the official
classes (ImageReward/models/BLIP/vit.py, med.py, ImageReward.py), not from the classes iqabench loads them into,
so a strict load in iqabench checks its mapping against the released layout.

Scaled down, as the other preference mirrors are (a real file is 1.8 GB): the ViT's width and depth
(:data:`TINY_BLIP_VIT`; the test process points iqabench's ``BLIP_VIT_LARGE`` at it with
:func:`use_tiny_blip_vit`) and the BERT sizes in ``med_config.json``. Real: the file names, every key name, the
224-px image with 16-px patches, the 30,524-row embedding (bert-base-uncased's 30,522 tokens plus ``[DEC]`` and
``[ENC]``), 512 positions, the ``position_ids`` buffer, the 256-wide contrastive projections, the MLP's
1024/128/64/16/1 widths, the config's keys (``encoder_width`` 768 included, which BLIP overrides by the ViT's
width) and fp32.

``bert-base-uncased`` gets the two tokenizer files ``BertTokenizer`` reads (``vocab.txt``,
``tokenizer_config.json``). The real vocabulary cannot be downloaded here: :func:`bert_vocab` has its size
(30,522) and its special tokens at their real ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, the
``[unusedN]`` slots), then characters and letter pairs/triples with their ``##`` continuations, so any ASCII
prompt tokenises through real WordPiece.
"""

from __future__ import annotations

import itertools
import json
import string
import tempfile
from pathlib import Path

import torch

from .hf_cache import write_snapshot

REPO = "THUDM/ImageReward"
TOKENIZER_REPO = "bert-base-uncased"
TINY_BLIP_VIT = {"img_size": 224, "patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2}
#: BLIP's med_config.json with BERT's sizes scaled down (hidden 768, 12 layers/heads, 3072 in the release)
TINY_MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
                   "intermediate_size": 64, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                   "model_type": "bert", "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 0,
                   "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True}
BERT_VOCAB_SIZE = 30522
PROJECTION = 256  # BLIP_Pretrain's embed_dim (vision_proj / text_proj)
HEAD_WIDTHS = (1024, 128, 64, 16, 1)  # ImageReward.py MLP; the parameters are layers.0, .2, .4, .6, .7
HEAD_INDICES = (0, 2, 4, 6, 7)


def use_tiny_blip_vit() -> None:
    """Make iqabench build :data:`TINY_BLIP_VIT` for ImageReward's visual encoder in this process."""
    from iqabench.metrics import imagereward

    imagereward.BLIP_VIT_LARGE = dict(TINY_BLIP_VIT)


def layout(vit: dict, med: dict) -> dict[str, tuple[int, ...]]:
    """Every key of ``ImageReward.pt`` with its shape, for a ViT ``vit`` and a text encoder ``med``."""
    width, hidden, inner = vit["embed_dim"], med["hidden_size"], med["intermediate_size"]
    grid = vit["img_size"] // vit["patch_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, width), "pos_embed": (1, grid * grid + 1, width),
        "patch_embed.proj.weight": (width, 3, vit["patch_size"], vit["patch_size"]),
        "patch_embed.proj.bias": (width,)}
    for i in range(vit["depth"]):
        for name, shape in (("norm1", (width,)), ("norm2", (width,))):
            shapes |= {f"blocks.{i}.{name}.weight": shape, f"blocks.{i}.{name}.bias": shape}
        for name, (out, inp) in (("attn.qkv", (3 * width, width)), ("attn.proj", (width, width)),
                                 ("mlp.fc1", (4 * width, width)), ("mlp.fc2", (width, 4 * width))):
            shapes |= {f"blocks.{i}.{name}.weight": (out, inp), f"blocks.{i}.{name}.bias": (out,)}
    shapes |= {"norm.weight": (width,), "norm.bias": (width,)}
    state = {f"blip.visual_encoder.{k}": v for k, v in shapes.items()}
    text = {"embeddings.position_ids": (1, med["max_position_embeddings"]),
            "embeddings.word_embeddings.weight": (med["vocab_size"], hidden),
            "embeddings.position_embeddings.weight": (med["max_position_embeddings"], hidden),
            "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(med["num_hidden_layers"]):
        for block, kv_width in (("attention", hidden), ("crossattention", width)):  # cross: keys/values off the ViT
            for name, inp in (("self.query", hidden), ("self.key", kv_width), ("self.value", kv_width),
                              ("output.dense", hidden)):
                text |= {f"encoder.layer.{i}.{block}.{name}.weight": (hidden, inp),
                         f"encoder.layer.{i}.{block}.{name}.bias": (hidden,)}
            text |= {f"encoder.layer.{i}.{block}.output.LayerNorm.{p}": (hidden,) for p in ("weight", "bias")}
        text |= {f"encoder.layer.{i}.intermediate.dense.weight": (inner, hidden),
                 f"encoder.layer.{i}.intermediate.dense.bias": (inner,),
                 f"encoder.layer.{i}.output.dense.weight": (hidden, inner),
                 f"encoder.layer.{i}.output.dense.bias": (hidden,),
                 f"encoder.layer.{i}.output.LayerNorm.weight": (hidden,),
                 f"encoder.layer.{i}.output.LayerNorm.bias": (hidden,)}
    state |= {f"blip.text_encoder.{k}": v for k, v in text.items()}
    state |= {"blip.vision_proj.weight": (PROJECTION, width), "blip.vision_proj.bias": (PROJECTION,),
              "blip.text_proj.weight": (PROJECTION, hidden), "blip.text_proj.bias": (PROJECTION,)}
    widths = (hidden, *HEAD_WIDTHS)
    for index, inp, out in zip(HEAD_INDICES, widths[:-1], widths[1:], strict=True):
        state |= {f"mlp.layers.{index}.weight": (out, inp), f"mlp.layers.{index}.bias": (out,)}
    return state


def random_state(vit: dict, med: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in :func:`layout`: norms near 1, biases small, weights scaled to keep activations O(1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout(vit, med).items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1]).expand(shape).clone()
            continue
        noise = torch.randn(shape, generator=generator)
        if "LayerNorm.weight" in key or key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            state[key] = 1 + 0.1 * noise
        elif key.endswith("bias"):
            state[key] = 0.02 * noise
        elif key.startswith("mlp.layers."):
            state[key] = noise / shape[1] ** 0.5
        else:
            state[key] = 0.05 * noise
    return state


def bert_vocab() -> list[str]:
    """A vocabulary of bert-base-uncased's size and special-token ids (see the module docstring)."""
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                *(f"[unused{i}]" for i in range(99, 994))]
    chars = [c for c in string.printable[:94] if not c.isupper()]
    vocab = [*specials, *chars, *(f"##{c}" for c in chars)]
    for n in (2, 3):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            vocab += ["".join(letters), "##" + "".join(letters)]
    return vocab[:BERT_VOCAB_SIZE]


def write_imagereward(cache: Path, seed: int = 0) -> dict[str, Path]:
    """Both repositories, as ``ImageReward.load`` and BLIP's ``init_tokenizer`` download them."""
    with tempfile.TemporaryDirectory(prefix="hub-mirror-") as scratch:
        folder = Path(scratch)
        torch.save(random_state(TINY_BLIP_VIT, TINY_MED_CONFIG, seed), folder / "ImageReward.pt")
        (folder / "med_config.json").write_text(json.dumps(TINY_MED_CONFIG, indent=2), "utf-8")
        (folder / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", "utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}),
                                                      "utf-8")
        return {REPO: write_snapshot(cache, REPO, {n: folder / n for n in ("ImageReward.pt", "med_config.json")}),
                TOKENIZER_REPO: write_snapshot(cache, TOKENIZER_REPO, {n: folder / n for n in
                                                                       ("vocab.txt", "tokenizer_config.json")})}
