"""Issue 28: text-image preference metrics (PickScore, CLIPScore, HPSv2, ImageReward) from the hub mirror's weights,
equal to their reference formulas (transformers' ``CLIPModel`` / open_clip directly; ImageReward restated in plain
torch ops in ``tests/imagereward_reference.py``), and the prompt-aware protocol that hands each image its own
prompt in relgain (and scores / sweeps, which share the scorer)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a subprocess: huggingface_hub and transformers freeze the cache path at import (see tests/hub_mirror).
SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel

    from iqabench.metrics import build_metric, metric_info
    from iqabench.api import run
    from iqabench.contracts.specs import RunSpec
    from iqabench.store.store import Store

    def reference(model_repo, processor_repo, image, prompt, kind):
        """The papers' formulas, straight from transformers (the PickScore model card's code; Hessel et al.'s
        CLIP-S = 2.5 max(cos, 0) with the 'A photo depicts ' prefix; torchmetrics' 100 max(cos, 0))."""
        model = CLIPModel.from_pretrained(model_repo).eval()
        processor = AutoProcessor.from_pretrained(processor_repo)
        text = {"clipscore": "A photo depicts " + prompt}.get(kind, prompt)
        with torch.no_grad():  # CLIPModel's own forward: logits_per_image = logit_scale.exp() * cos
            inputs = processor(text=[text], images=[image], padding=True, truncation=True, max_length=77,
                               return_tensors="pt")
            logits = model(**inputs).logits_per_image[0, 0]
            cos = logits / model.logit_scale.exp()
        if kind == "pickscore":
            return float(logits)
        return float({"clipscore": 2.5, "clipscore_100": 100.0}[kind] * max(float(cos), 0.0))

    repos = {"pickscore": ("yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
             "clipscore": ("openai/clip-vit-base-patch32",) * 2,
             "clipscore_100": ("openai/clip-vit-large-patch14",) * 2,
             "hpsv2": ("HPS_v2_compressed.pt", None), "hpsv2.1": ("HPS_v2.1_compressed.pt", None),
             "imagereward": (None, None)}
    def hps_reference(filename, image, prompt):
        """hpsv2.score's formula with open_clip directly: diag(normalised image @ normalised text features)."""
        import open_clip
        from huggingface_hub import hf_hub_download
        model = open_clip.create_model("ViT-H-14", pretrained=None)
        state = torch.load(hf_hub_download("xswu/HPSv2", filename), map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        model.eval()
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        with torch.no_grad():
            image_features = model.encode_image(preprocess(image)[None])
            text_features = model.encode_text(open_clip.get_tokenizer("ViT-H-14")([prompt]))
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            return float((image_features @ text_features.T)[0, 0])

    sys.path.insert(0, "tests")
    from hub_mirror.preference_cache import use_tiny_vit_h14
    from hub_mirror.imagereward_cache import TINY_BLIP_VIT, use_tiny_blip_vit
    from imagereward_reference import imagereward_score
    use_tiny_vit_h14()
    use_tiny_blip_vit()

    def expected_score(name, image, prompt):
        if name == "imagereward":  # ImageReward.score restated over the same state dict
            return imagereward_score(image, prompt, vit_heads=TINY_BLIP_VIT["num_heads"])
        if name.startswith("hps"):
            return hps_reference(repos[name][0], image, prompt)
        return reference(*repos[name], image, prompt, name)

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    batch = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    out = {}
    for name in repos:
        metric = build_metric(name)
        info = metric_info(name)
        mine = float(metric.score(batch, prompts=["a red bicycle leaning on a wall"])[0])
        expected = expected_score(name, image, "a red bicycle leaning on a wall")
        out[name] = {"mine": mine, "reference": expected,
                     "lower_better": info.lower_better, "prompt_aware": info.prompt_aware,
                     "fingerprint": metric.fingerprint()}
        if name == "imagereward":  # a second prompt: the score follows the prompt, still equal to the formula
            out[name]["other_prompt"] = float(metric.score(batch, prompts=["a cat"])[0])
            out[name]["other_reference"] = expected_score(name, image, "a cat")
        try:
            metric.score(batch)
        except Exception as exc:
            out[name]["without_prompt"] = str(exc)

    # the prompt reaches the metric inside a run: each stored score equals the formula on that image's prompt
    spec = RunSpec("relgain", ["tiny-sd"], metrics=["pickscore", "imagereward"], prompts="smoke", limit=2)
    outcome = run(spec, out=sys.argv[1], report=False)
    store = Store(sys.argv[1])
    from iqabench.engine.runner import Runner
    runner = Runner(spec, sys.argv[1])
    pairs = []
    for name in spec.metrics:
        for planned, key in zip(runner.plan, runner.image_keys):
            stored = store.get_scores([key], name, runner.metric_fps[name])[key]
            pairs.append((stored, expected_score(name, store.load_image(key), planned.item.prompt),
                          planned.item.prompt))
    out["run"] = {"complete": outcome.complete, "pairs": pairs}
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def measured(hub_mirror, tmp_path_factory):
    hub_mirror.ensure("preference")
    store = tmp_path_factory.mktemp("pref-store")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(store)], env=hub_mirror.environ(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["pickscore", "clipscore", "clipscore_100", "hpsv2", "hpsv2.1", "imagereward"])
def test_preference_metric_equals_its_reference_formula_on_the_mirror_weights(measured, name):
    row = measured[name]
    assert row["mine"] == pytest.approx(row["reference"], rel=1e-5, abs=1e-6)
    assert row["lower_better"] is False and row["prompt_aware"] is True
    assert "passes no prompt" in row["without_prompt"]


def test_clipscore_conventions_differ_by_their_published_weights(measured):
    # CLIP-S is bounded by 2.5 (Hessel et al.); torchmetrics' convention by 100
    assert 0 <= measured["clipscore"]["mine"] <= 2.5
    assert 0 <= measured["clipscore_100"]["mine"] <= 100
    assert len({measured[n]["fingerprint"] for n in ("pickscore", "clipscore", "clipscore_100", "hpsv2")}) == 4
    assert measured["hpsv2"]["mine"] != measured["hpsv2.1"]["mine"]  # two releases, two weights files


def test_each_image_in_a_run_is_scored_against_its_own_prompt(measured):
    run = measured["run"]
    assert run["complete"]
    prompts = {p for _, _, p in run["pairs"]}
    assert len(prompts) == 2  # two prompts, each with the base and its baseline image
    for stored, expected, _ in run["pairs"]:
        assert stored == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_missing_preference_weights_are_named_before_any_work_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from iqabench.metrics import MetricUnavailableError, check_available, preference_weight_files

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    files = preference_weight_files("pickscore")  # what `iqabench fetch` / `list metrics` read
    assert [f.path.name for f in files] == ["config.json", "model.safetensors", "config.json",
                                            "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json"]
    assert "yuvalkirstain/PickScore_v1" in files[0].what and "laion/CLIP-ViT-H-14" in files[2].what
    with pytest.raises(MetricUnavailableError, match=r"'pickscore' cannot be built offline.*PickScore_v1.*"
                                                     r"model\.safetensors is not in"):
        check_available("pickscore")
    assert [f.path.name for f in preference_weight_files("hpsv2")] == ["HPS_v2_compressed.pt"]


def test_imagereward_reads_the_released_files_and_is_a_higher_is_better_prompt_aware_metric():
    from iqabench.metrics import metric_info, preference_weight_files

    files = preference_weight_files("imagereward")  # what `iqabench fetch`, `list metrics` and the preflight read
    assert [(f.source, f.path.name) for f in files] == [
        ("THUDM/ImageReward", "med_config.json"), ("THUDM/ImageReward", "ImageReward.pt"),
        ("bert-base-uncased", "tokenizer_config.json"), ("bert-base-uncased", "vocab.txt")]
    info = metric_info("imagereward")
    assert (info.lower_better, info.prompt_aware, info.native_side) == (False, True, 224)


def test_imagereward_scores_depend_on_the_prompt_and_equal_the_official_formula(measured):
    row = measured["imagereward"]
    assert row["other_prompt"] == pytest.approx(row["other_reference"], rel=1e-5, abs=1e-6)
    assert abs(row["other_prompt"] - row["mine"]) > 1e-4  # the prompt reaches the cross-attention


def test_a_planted_imagereward_checkpoint_is_refused_without_running(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from hub_mirror.hf_cache import write_snapshot
    from hub_mirror.planted import plant

    from iqabench.io.safe_load import UnsafeCheckpointError
    from iqabench.metrics.imagereward import ImageReward
    from iqabench.metrics.preference_weights import preference_weights_status

    marker = tmp_path / "pwned"
    cache = tmp_path / "hub"
    for name in ("med_config.json", "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).write_text("{}")
    write_snapshot(cache, "THUDM/ImageReward", {"ImageReward.pt": plant(tmp_path / "ImageReward.pt", marker),
                                                "med_config.json": tmp_path / "med_config.json"})
    write_snapshot(cache, "bert-base-uncased", {n: tmp_path / n for n in ("tokenizer_config.json", "vocab.txt")})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    present, detail = preference_weights_status("imagereward")
    assert present is False and "ImageReward.pt holds pickled objects" in detail and "never unpickles" in detail
    with pytest.raises(UnsafeCheckpointError, match="ImageReward.pt holds pickled objects other than tensors"):
        ImageReward()
    assert not marker.exists()


def test_fetch_downloads_imagereward_files_and_the_offline_run_scores_with_them(hub_mirror, tmp_path):
    from hub_mirror.server import HubServer, serve
    from test_fetch_preflight import cli, empty_caches

    hub_mirror.ensure("preference")
    state = HubServer()
    state.add_hf_cache(hub_mirror.root / "hf" / "hub")
    caches = tmp_path / "caches"
    args = ["scores", "--generator", "tiny-sd[steps=1]", "--metrics", "imagereward", "--limit", "1"]
    with serve(state) as hub:
        env = empty_caches(caches, HF_ENDPOINT=hub.url)
        fetched = cli(env, "fetch", *args, cwd=tmp_path)
        assert fetched.returncode == 0, fetched.stderr[-3000:]
    got = sorted(p.relative_to(caches / "hf" / "hub").parts[0] + "/" + p.name
                 for p in (caches / "hf" / "hub").glob("models--*/snapshots/*/*"))
    assert got == ["models--THUDM--ImageReward/ImageReward.pt", "models--THUDM--ImageReward/med_config.json",
                   "models--bert-base-uncased/tokenizer_config.json", "models--bert-base-uncased/vocab.txt"]
    offline = {**env, "HF_HUB_OFFLINE": "1", "IQABENCH_OFFLINE": "1"}
    out = tmp_path / "out"
    run = cli(offline, "run", *args, "--plugin", str(ROOT / "tests" / "tiny_imagereward_plugin.py"),
              "--batch-size", "1", "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(next(out.glob("runs/*/run.json")).read_text())["status"] == "complete"


def test_imagereward_real_vit_and_tokenizer_are_blips(tmp_path):
    """The suite's model is scaled down, so the real sizes and the token layout are pinned here (values read from
    the official ``create_vit('large')`` and BLIP's ``init_tokenizer``): a typo would otherwise go unnoticed."""
    import json

    from hub_mirror.imagereward_cache import bert_vocab

    from iqabench.metrics.imagereward import BLIP_VIT_LARGE, PROMPT_TOKENS, blip_tokenizer

    assert BLIP_VIT_LARGE == {"img_size": 224, "patch_size": 16, "embed_dim": 1024, "depth": 24, "num_heads": 16}
    assert PROMPT_TOKENS == 35
    (tmp_path / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n", "utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), "utf-8")
    tokenizer = blip_tokenizer(str(tmp_path))
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[DEC]", "[ENC]"]) == [101, 102, 30522, 30523]
    long = tokenizer(["a b c d " * 40], padding="max_length", truncation=True, max_length=PROMPT_TOKENS)
    ids = long["input_ids"][0]
    assert len(ids) == PROMPT_TOKENS and ids[0] == 101 and ids[-1] == 102  # [CLS] first, [SEP] kept when cut
