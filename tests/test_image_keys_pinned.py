"""Today's image keys for the built-in generator specs, as literal sha256 values.

An image key is ``sha256(generator fingerprint, work item)``: a refactor that
renames a module, a class or an option and changes a fingerprint by accident
would silently orphan every cached image of existing runs. This test builds each
built-in spec that can be built without real weights (hub specs against a fake
Hugging Face cache holding only the files the weights check looks at; adapter
and LoRA files with fixed bytes) and compares its keys with the values recorded
before the architecture refactor of issue 14. A deliberate key change must
update the literal here *and* explain the migration in the commit and docs.

The metric's own fingerprint inside a guidance fingerprint is replaced by a
constant: it belongs to the metric layer (pyiqa version, weights) and is pinned
there, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iqabench.contracts.generators import WorkItem, build_generator
from iqabench.execution.runtime import Runtime
from iqabench.store.store import image_key

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_IDS = ("stabilityai/stable-diffusion-xl-base-1.0", "stable-diffusion-v1-5/stable-diffusion-v1-5",
           "stabilityai/stable-diffusion-2-1", "someone/some-pipeline")
ITEMS = (WorkItem("p0", "a photo of a cat", 0), WorkItem("p1", "a red bicycle", 7, {"steps": 2}))


def _fake_hub_cache(root: Path) -> Path:
    """The layout ``huggingface_hub.try_to_load_from_cache`` reads, with empty weight files."""
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.35.0",
             "scheduler": ["diffusers", "PNDMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None]}
    for repo in HUB_IDS:
        base = root / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(COMMIT)
        snapshot = base / "snapshots" / COMMIT
        for sub in ("scheduler", "unet", "vae"):
            (snapshot / sub).mkdir(parents=True)
        (snapshot / "model_index.json").write_text(json.dumps(index))
        (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
        (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
        for name in ("scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors"):  # a complete snapshot's other files
            (snapshot / name).write_bytes(b"x")
    return root


@pytest.fixture
def weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(_fake_hub_cache(tmp_path / "hub")))
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    for stem in ("iqa_adapter_topiq_nr", "iqa_adapter_hyperiqa", "iqa_adapter_topiq_nr+laion_aes"):
        (adapters / f"{stem}.safetensors").write_bytes(b"adapter bytes " + stem.encode())
    monkeypatch.setenv("IQABENCH_ADAPTER_DIR", str(adapters))
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"lora bytes")
    (lora / "lora.json").write_text(json.dumps({"rank": 4, "alpha": 4, "base": "tiny-sd"}))
    return {"lora": str(lora)}


def _keys(spec: str) -> list[str]:
    generator = build_generator(spec, Runtime("cpu", "fp32", 2))
    fingerprint = dict(generator.fingerprint())
    if "metric_fingerprint" in fingerprint:
        fingerprint["metric_fingerprint"] = "pinned-elsewhere"
    return [image_key(fingerprint, item.key_fields()) for item in ITEMS]


SPECS = {
    "tiny-sd": (
        "89246ba2575c1953d21c0f39605eb7a3ba68a54af4e869f621b5ff8422a9c373",
        "72b0f4ea2fc3e2c34694fffed157373565d33880ef40a783fd4dcd6c6019b533",
    ),
    "tiny-sdxl": (
        "17f2ee53a2521c30cd14a5ff30550c882bb632984cc8c62eb098338be0eec9af",
        "bf55640efcff4e51328cf8c88d281cb90faf871f0cf3b5cdb230918de4456496",
    ),
    "tiny-sd[steps=3,guidance_scale=5,seed=1]": (
        "5b0134c36c4f53897ca69980d69b829551adb5819e939c4fb53e16b284635d88",
        "cb9b82ae8e8bfc7a2d882f73680987c756e05db27055da883bd9eb792a92b0ac",
    ),
    "sdxl": (
        "9bdd1532e21ee5a55b4a3a2eeded71edf12adbdedbd23f8a3fd8d49b640a2c05",
        "1fc109cfc55809f16faf504bd75e1bdedf558a0b9f5923310126e82a7411f326",
    ),
    "sdxl[variant=fp16,steps=20]": (
        "3be21b8da6b6ee916b62a4e8733f1d4c098f718387595a8f7d8b6856110ae768",
        "5bb8b8ce318c778c76a1a36d58d3c278f04c48dc40b2f71c2b11b588bb4ad5f5",
    ),
    "sd15": (
        "ffd727c64f5e668a7f13428751695c800a711365b5780bc23fafe32c541846ef",
        "a6f83ea081d8ac62722a7feb5af7aec6c6be731d3e8566ad59d857048dd21f92",
    ),
    "sd21": (
        "27b5b51375afe5c033f2982fd9803254e16e9f37992b6766a3f89380beb407f8",
        "53afe1e383ab56dd81f9cabe7a42d90a979e0df00b1e0593aa01b2f8152829ca",
    ),
    "diffusers:someone/some-pipeline": (
        "836ddae9bc5e1777d8ee882a40205e2499af33241a2ea0f28f37c17129dc0882",
        "de46b72ca01a4a629f137288b5fda38d1fb95f8116f57e9015ad10d9e56180ea",
    ),
    # Issue 16: lambda now defaults to the paper's 0.5, so the default specs make other images and have new keys;
    # the images cached under the old default (lambda 1.0) keep their keys as [scale=1.0].
    "iqa-adapter:topiq": (
        "e2ce38967b68a53beb8f8c19c50f6812ca8633e857767dcdf1bf148a835e9b0f",
        "52ffa046f1577ebcf7948f6a7d67e2ec5f19cd094d0930d23f67c4e9b8328a7e",
    ),
    "iqa-adapter:hyperiqa": (
        "d8fb7e3ca510074f5991ad1b2690c80180c322f71dfac3009dd74c21a06f37dc",
        "e0d799564dad428d1d6dfd19eac413142d8e2ffb3956dda72c40d4affcd4e328",
    ),
    "iqa-adapter:topiq+laion_aes": (
        "24fb33e2f29cc8d8c71b4eee61fc0d5b451ce3729075ab7bf064b99dc3499d92",
        "7478ed029f984b6da29becc99dd91bccba90edb0b54efb64aa05635b0f64f07e",
    ),
    "iqa-adapter:topiq[scale=1.0]": (
        "59d29514e9b4c7675e216eefb8da1535c9ffa305f3cd7e2f8b184c3f7c746bd4",
        "59867eea532f289d179d2d625064f9262559b293c4620cb742f2b2c3fe66ffb5",
    ),
    "iqa-adapter:hyperiqa[scale=1.0]": (
        "a37dc8deea9bec8f322607fccd43452cf53f9629d9e5a1593246fb6e62817ccb",
        "3e6e82587b5cd01296cea555f88758de07eac54a1b249d351f95a5e8ae679344",
    ),
    "iqa-adapter:topiq+laion_aes[scale=1.0]": (
        "f39341913af4184659541e67b38a6520d2bc1a1893ae76e6162873db7c353371",
        "f949afc671f13152a1189bdb0f2450c1d5bc200eb89ab52a3ed8964e10c02ea6",
    ),
    "iqa-adapter:topiq[base=tiny-sd,scale=0.5,target=p90]": (
        "56fa40e7261aad4507c9fb613190c03253da390d640c8a40723d477ea435bef3",
        "2f951211e71357625586ae40e37bdcc98c9a09d123e11e48000f20637c58e9bd",
    ),
    # Issue 16: guidance now defaults to the paper's formula without sigma_t (scaling=paper): new keys; the
    # images cached under the old default (with sigma_t) keep their keys as [scaling=classifier].
    # Issue 16 review: scaling=paper now takes the gradient w.r.t. z_t, not Euler's scaled sample (fingerprint
    # gains "gradient": "z_t"): new keys again for scaling=paper; scaling=classifier is numerically unchanged.
    "guidance:topiq_nr[base=tiny-sd]": (
        "89e17c54ee5505a7edae784ae7655fe933f0cebb522f727f78217500b3f7d0fc",
        "5243e3b911971ba8fe36348f569e07229c74f597a068eec3930b24799656fd0a",
    ),
    "guidance:topiq_nr[base=tiny-sd,alpha=10,variant=x0]": (
        "933b5356e94baad3bd6145c3bfb594402003b7ee30682e89dc2bd71348c32e24",
        "5124a2b2b1c3d766de257e8263f428115135b73fe0ae63ae8390ab88abf73e01",
    ),
    "guidance:topiq_nr[base=tiny-sd,scaling=classifier]": (
        "8ffbcf1f677f070f55a3e801a38dcb2ed86957a508fd2e713770558893201f11",
        "32f2180fc544249bdc1bbb8afd6a9dc5fa9a0f8b2db220b848d483a1cf1084cd",
    ),
    "guidance:topiq_nr[base=tiny-sd,alpha=10,decode=x0,scaling=classifier]": (
        "e4e655c8514a49114ef22d4d5cef52339505936564dbbdcc4f5b59cecc7c73ea",
        "a6996fa3a51c4a0aea9de465b9e82a50d9a5e85d07b0220e210c7b00098db091",
    ),
    "acpo:{lora}": (
        "0af015367a809b72b0d880c4a678bb15f8f8da4fda5167ab2f942b2549d76734",
        "6ea0a4b7a1b0c7fc469131389c46685b831b54db7f3ab6f7687cbc8aeacff2c2",
    ),
    "acpo:{lora}[steps=3]": (
        "c0492d02599a5fe80790071a446ac2a670b250b254c169032a92c39b7601ab0f",
        "6fe59954bd36c185ce20529cc5411a080074ecf39baec09fe0cff52cf01ad96e",
    ),
}


@pytest.mark.parametrize("spec", list(SPECS))
def test_image_keys_unchanged(spec, weights):
    assert _keys(spec.format(**weights)) == list(SPECS[spec]), f"image keys of {spec!r} changed"


def test_guidance_decode_option_keeps_keys_and_frees_the_base_weights_variant(weights):
    """``variant=z|x0`` was renamed ``decode``: the old spelling warns and keeps its keys; ``variant=fp16`` now
    reaches the base model (before, guidance over a hub base looked for ``*.z.safetensors`` and failed)."""
    import warnings

    renamed = _keys("guidance:topiq_nr[base=tiny-sd,alpha=10,decode=x0]")
    assert renamed == list(SPECS["guidance:topiq_nr[base=tiny-sd,alpha=10,variant=x0]"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_generator("guidance:topiq_nr[base=tiny-sd,variant=x0]", Runtime("cpu", "fp32", 2))
    assert any("decode=x0" in str(w.message) for w in caught if issubclass(w.category, FutureWarning))

    runtime = Runtime("cpu", "fp32", 2)
    plain = build_generator("guidance:topiq_nr[base=sd15,steps=20]", runtime)
    half = build_generator("guidance:topiq_nr[base=sd15,steps=20,variant=fp16]", runtime)
    assert plain.fingerprint()["variant"] == half.fingerprint()["variant"] == "z"  # the decode mode
    assert half.fingerprint()["weights_variant"] == "fp16" and plain.fingerprint()["weights_variant"] is None
    assert "variant=fp16" in half.baseline() and "variant" not in plain.baseline()
    assert _keys("guidance:topiq_nr[base=sd15,steps=20,variant=fp16]") != _keys("guidance:topiq_nr[base=sd15,steps=20]")
