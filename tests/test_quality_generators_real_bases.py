"""Every quality generator (iqa-adapter, guidance, acpo) with its baseline over real bases, from the hub mirror.

Bases: the ``sdxl`` and ``sd15`` presets and ``diffusers:<hub id>`` read from a Hugging Face cache snapshot, and
``diffusers:<folder>`` (a ``save_pretrained`` folder), each also with the base's own ``variant=fp16`` files.
Nothing here uses ``[path=...]`` or ``weights=random``: the pipelines load through the same code as real ones.
"""

from __future__ import annotations

import pytest
import torch

from iqabench.contracts.generators import WorkItem, build_generator
from iqabench.contracts.specs import GeneratorSpec
from iqabench.execution.runtime import Runtime
from iqabench.metrics import register_metric

SMALL = "steps=2,height=64,width=64"
RT = Runtime("cpu", "fp32", 1)
ITEM = WorkItem("p0", "a red car on a street", 0)


@register_metric("hub_test_sharpness", lower_better=False, differentiable=True, overwrite=True)
def _sharpness(device):
    """Mean absolute vertical gradient: a differentiable toy NR metric (guidance needs one; pyiqa's are tested
    against the mirror in the end-to-end module)."""

    class Sharpness(torch.nn.Module):
        def forward(self, x):
            return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + 1e-3

    return Sharpness()


@pytest.fixture(scope="module")
def bases(hub_mirror, tmp_path_factory):
    """Base specs -> (UNet builder of the right shape, is SDXL); the mirror's env applied for the module."""
    from hub_mirror.hf_cache import SD15_ID, SDXL_ID, save_pipeline_folder

    hub_mirror.ensure("hf", "adapters")
    with pytest.MonkeyPatch.context() as patch:
        hub_mirror.apply(patch)
        root = tmp_path_factory.mktemp("bases")
        sdxl_folder = save_pipeline_folder(SDXL_ID, root / "sdxl-folder", fp16_variant=True)
        sd15_folder = save_pipeline_folder(SD15_ID, root / "sd15 folder", fp16_variant=True)  # a space in the path
        yield {
            "sdxl": True,
            "sdxl[variant=fp16]": True,
            "sd15": False,
            f"diffusers:{SDXL_ID}": True,
            f"diffusers:{SDXL_ID}[variant=fp16]": True,
            f"diffusers:{sdxl_folder}": True,
            f"diffusers:{sdxl_folder}[variant=fp16]": True,
            f"diffusers:{sd15_folder}[variant=fp16]": False,
        }, root


def _split(base: str) -> tuple[str, str]:
    """``diffusers:x[variant=fp16]`` -> (``diffusers:x``, ``variant=fp16``): a base's options go on the outer spec."""
    spec = GeneratorSpec.parse(base)
    bare = str(GeneratorSpec(spec.family, spec.variant, ()))
    return bare, ",".join(f"{k}={v}" for k, v in spec.options)


def _adapter_for(is_sdxl: bool, root, sd15_unet_from: str) -> str:
    if is_sdxl:
        return "iqa-adapter:topiq"
    return f"iqa-adapter:{_sd15_adapter(root, sd15_unet_from)}"


_SD15_ADAPTER: dict[str, str] = {}


def _sd15_adapter(root, base: str) -> str:
    """An IQA-Adapter file trained (here: random) on the mirror's SD 1.5 UNet, in iqabench's safetensors layout."""
    if "file" not in _SD15_ADAPTER:
        from iqabench.adapters.iqa_adapter.adapter import AdapterConfig, IQAAdapter
        from iqabench.adapters.iqa_adapter.checkpoint import save_adapter

        unet = build_generator(base, RT).load_pipeline().unet
        adapter = IQAAdapter(AdapterConfig(("topiq_nr",), base="sd15"), unet, init_from_base=False)
        _SD15_ADAPTER["file"] = str(save_adapter(adapter, root / "sd15-adapter.safetensors"))
    return _SD15_ADAPTER["file"]


_LORAS: dict[bool, str] = {}


def _lora_for(is_sdxl: bool, root, base: str) -> str:
    """An ACPO LoRA folder (random LoRA weights) for the base's UNet shape."""
    if is_sdxl not in _LORAS:
        from iqabench.adapters.acpo.lora import add_lora, save_lora

        unet = build_generator(base, RT).load_pipeline().unet
        add_lora(unet, rank=2)
        folder = root / f"lora-{'sdxl' if is_sdxl else 'sd15'}"
        save_lora(unet, folder, metadata={"base": base})
        _LORAS[is_sdxl] = str(folder)
    return _LORAS[is_sdxl]


def _quality_specs(base: str, is_sdxl: bool, root) -> list[str]:
    bare, base_options = _split(base)
    options = ",".join(o for o in (SMALL, base_options) if o)
    plain = str(GeneratorSpec.parse(f"{bare}[{options}]"))
    adapter = _adapter_for(is_sdxl, root, plain)
    return [
        f"{adapter}[base={bare},{options}]",
        f"guidance:hub_test_sharpness[base={bare},alpha=5,{options}]",
        f"acpo:{_lora_for(is_sdxl, root, plain)}[base={bare},{options}]",
    ]


def test_every_quality_generator_and_its_baseline_builds_over_every_base(bases):
    """Construction and baseline specs only (cheap: nothing is loaded): the whole matrix."""
    table, root = bases
    for base, is_sdxl in table.items():
        bare, base_options = _split(base)
        for spec in _quality_specs(base, is_sdxl, root):
            generator = build_generator(spec, RT)
            baseline = generator.baseline()
            assert baseline is not None
            parsed = GeneratorSpec.parse(baseline)
            assert str(GeneratorSpec(parsed.family, parsed.variant, ())) == bare, (spec, baseline)
            assert "path" not in parsed.options_dict, f"{spec}: baseline {baseline} names the folder twice"
            base_gen = build_generator(baseline, RT)
            # The baseline is the same pipeline files, the same generation options and the same weights variant.
            assert base_gen.location.folder == generator.location.folder
            assert base_gen.options.get("variant") == generator.options.get("variant")
            assert base_gen.options.get("variant") == ("fp16" if "variant=fp16" in base_options else None)
            for key in ("steps", "height", "width"):
                assert base_gen.options[key] == generator.options[key]


@pytest.mark.parametrize("base", ["sdxl[variant=fp16]", "diffusers:{sdxl_id}[variant=fp16]",
                                  "diffusers:{sd15_folder}[variant=fp16]"])
def test_quality_generators_generate_over_fp16_variant_bases(bases, base):
    """Load and generate with each quality generator and its baseline; the fp16 files are the ones loaded."""
    from hub_mirror.hf_cache import SDXL_ID

    table, root = bases
    base = base.format(sdxl_folder=root / "sdxl-folder", sd15_folder=root / "sd15 folder", sdxl_id=SDXL_ID)
    is_sdxl = table[base]
    images = {}
    for spec in _quality_specs(base, is_sdxl, root):
        generator = build_generator(spec, RT)
        baseline = build_generator(generator.baseline(), RT)
        for gen in (generator, baseline):
            [image] = gen.generate([ITEM])
            assert image.mode == "RGB" and image.size == (64, 64)
            images[gen.name] = image
        unet = generator.pipeline.unet
        assert unet.dtype == torch.float32  # the runtime's dtype, loaded from the fp16 files
        weight = next(p for n, p in unet.named_parameters() if n.endswith("conv_in.weight"))
        assert torch.equal(weight, weight.half().float()), f"{spec} did not load the fp16 variant files"
    assert len(images) >= 4  # three quality generators and their (shared) baseline


def test_sd21_and_sd14_load_from_their_hub_snapshots(bases):
    """The other hub ids the mirror holds: SD 2.1 (v-prediction) and SD 1.4 through their presets and by hub id,
    and `iqabench list generators`' weight probe sees the snapshots."""
    from iqabench.contracts.registry import GENERATORS

    for spec in (f"sd21[{SMALL}]", f"sd14[{SMALL}]", f"diffusers:CompVis/stable-diffusion-v1-4[{SMALL}]"):
        generator = build_generator(spec, RT)
        assert generator.location.commit is not None  # resolved through refs/main to a snapshot commit
        [image] = generator.generate([ITEM])
        assert image.size == (64, 64)
    assert type(build_generator(f"sd21[{SMALL}]", RT).pipeline.scheduler).__name__ == "DDIMScheduler"
    present, detail = GENERATORS.get("sdxl").weights()
    assert present and "snapshots" in detail
    present, detail = GENERATORS.get("iqa-adapter").weights()
    found = detail.split(":", 1)[1].split(";")[0]
    assert present and sorted(found.replace(" ", "").split(",")) == ["hyperiqa", "topiq", "topiq+laion_aes"]


def test_sd15_download_without_safety_checker_is_complete(bases, tmp_path):
    """`hf download ... --exclude "safety_checker/*" "feature_extractor/*"` (what docs/weights.md suggests) gives a
    pipeline iqabench loads: it never loads the safety checker, so it does not ask for its files."""
    import shutil

    table, root = bases
    slim = tmp_path / "sd15-slim"
    shutil.copytree(root / "sd15 folder", slim)
    shutil.rmtree(slim / "safety_checker")
    shutil.rmtree(slim / "feature_extractor")
    [image] = build_generator(f"diffusers:{slim}[{SMALL}]", RT).generate([ITEM])
    assert image.size == (64, 64)
