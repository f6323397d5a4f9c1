"""Issue 22 item 4 (one options system) and issue 26 item 6 (generator option values validated before any work).

An option is one dataclass field: listing, validation, fingerprint and the pipeline call all read the field.
Every bad value is one sentence when the generator is built (exit 2 through the CLI), never an image failure.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest

from iqabench.adapters.diffusers_base import DiffusersGenerator
from iqabench.adapters.generator_options import GENERATION_OPTIONS, GenerationOptions, HubOptions, TinyOptions
from iqabench.cli import main
from iqabench.contracts.generators import GENERATORS, WorkItem, build_generator, register_generator
from iqabench.contracts.options import INT64_MAX, flag, integer, number, option, text
from iqabench.contracts.specs import GeneratorSpec, SpecError
from iqabench.execution.runtime import Runtime
from iqabench.support.tiny_models import tiny_sd_pipeline

CPU = Runtime(device="cpu", dtype="fp32")
HUGE = 10**400  # an integer no float holds: float() raises OverflowError


# -- one field is the whole declaration ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RescaleOptions(TinyOptions):
    """Tiny SD with one extra option, declared by one field and nothing else."""

    guidance_rescale: float | None = option(None, "rescale of the CFG noise prediction (Lin et al. 2023)",
                                            rule=number(0, 1), pipeline_arg="guidance_rescale", item_param=True,
                                            fingerprint=True)


@pytest.fixture
def rescale_family():
    name = "tiny-rescale-test"

    @register_generator(name, description="tiny SD with guidance_rescale", options=RescaleOptions, overwrite=True)
    def build(spec, runtime):
        return DiffusersGenerator(spec, runtime, source=name, options=RescaleOptions, tiny_builder=tiny_sd_pipeline)

    yield name
    GENERATORS.remove(name)


def test_a_new_option_is_listed_validated_fingerprinted_and_passed_to_the_pipeline(rescale_family, capsys,
                                                                                   monkeypatch):
    from diffusers import StableDiffusionPipeline

    from iqabench.cli import listing as cli_listing

    # listed, with its valid range
    monkeypatch.setattr(cli_listing.out_console, "_width", 250)  # one table line per option
    cli_listing.print_generator_options([GENERATORS.get(rescale_family)])
    listing = " ".join(capsys.readouterr().out.split())
    assert "guidance_rescale" in listing and "rescale of the CFG noise" in listing
    assert "│ a finite number >= 0 and <= 1 │" in listing
    row = next(r for r in RescaleOptions.describe() if r.name == "guidance_rescale")
    assert row.valid == "a finite number >= 0 and <= 1" and row.default is None
    # validated when the spec becomes a generator
    with pytest.raises(SpecError) as bad:
        build_generator(f"{rescale_family}[guidance_rescale=2]", CPU)
    assert str(bad.value) == (f"generator '{rescale_family}[guidance_rescale=2]': option guidance_rescale=2 is "
                              "invalid, expected a finite number >= 0 and <= 1")
    # fingerprinted when set (normalised: 1 and 1.0 are one key), absent when not (existing keys stay)
    plain = build_generator(rescale_family, CPU)
    assert "guidance_rescale" not in plain.fingerprint()
    gen = build_generator(f"{rescale_family}[guidance_rescale=1,steps=1]", CPU)
    assert gen.fingerprint()["guidance_rescale"] == 1.0
    assert gen.fingerprint() == build_generator(f"{rescale_family}[guidance_rescale=1.0,steps=1]", CPU).fingerprint()
    # a quality generator on this base takes it too, and its baseline keeps it
    guided = build_generator(f"guidance:topiq_nr[base={rescale_family},guidance_rescale=0.5]", CPU)
    assert guided.fingerprint()["guidance_rescale"] == 0.5
    assert guided.baseline() == f"{rescale_family}[guidance_rescale=0.5,seed=0]"  # the base options, as always
    # passed to the pipeline, and overridable per item (item params are checked by the same rule)
    calls = []
    original = StableDiffusionPipeline.__call__

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", spy)
    gen.generate([WorkItem("p0", "a cat", 0)])
    gen.generate([WorkItem("p0", "a cat", 0, params={"guidance_rescale": 0.25})])
    assert [c["guidance_rescale"] for c in calls] == [1.0, 0.25]
    assert "guidance_rescale" not in plain.generation_options({}) or plain.generation_options({})[
        "guidance_rescale"] is None
    with pytest.raises(SpecError, match="option guidance_rescale=5 is invalid, expected a finite number >= 0"):
        gen.generate([WorkItem("p0", "a cat", 0, params={"guidance_rescale": 5})])


def test_the_fields_are_the_old_tables():
    """GENERATION_OPTIONS, the pipeline map and the fingerprint keys follow from the fields (pinned keys: see
    tests/test_image_keys_pinned.py)."""
    assert GENERATION_OPTIONS == ("steps", "guidance_scale", "height", "width", "negative_prompt")
    fields = GenerationOptions.fields()
    assert {n: f.meta.pipeline_arg for n, f in fields.items()} == {
        "steps": "num_inference_steps", "guidance_scale": "guidance_scale", "height": "height", "width": "width",
        "negative_prompt": "negative_prompt"}
    assert [f.fingerprint_key for f in HubOptions.fields().values()] == [
        "steps", "guidance_scale", "height", "width", "negative_prompt", None, None, "variant"]
    assert TinyOptions.fields()["seed"].fingerprint_key == "tiny_seed"
    assert HubOptions.defaults(steps=35)["steps"] == 35
    with pytest.raises(TypeError, match="HubOptions has no option stesp"):
        HubOptions.defaults(stesp=35)


def test_a_field_redeclared_for_a_new_default_keeps_its_declaration():
    """A preset's ``steps: int = option(2, "few")`` must still reach the pipeline, the rule and the cache key."""

    @dataclasses.dataclass(frozen=True)
    class FewStep(TinyOptions):
        steps: int = option(2, "few steps")

    steps = FewStep.fields()["steps"]
    assert (steps.default, steps.meta.help, steps.meta.pipeline_arg, steps.fingerprint_key) == (
        2, "few steps", "num_inference_steps", "steps")
    assert steps.meta.rule == TinyOptions.fields()["steps"].meta.rule
    gen = DiffusersGenerator(GeneratorSpec.parse("few"), CPU, source="few", options=FewStep,
                             tiny_builder=tiny_sd_pipeline)
    assert gen.fingerprint()["steps"] == 2 and gen.generation_options({})["steps"] == 2
    with pytest.raises(SpecError, match="option steps=0 is invalid"):
        DiffusersGenerator(GeneratorSpec.parse("few[steps=0]"), CPU, source="few", options=FewStep,
                           tiny_builder=tiny_sd_pipeline)


def test_a_quality_generator_own_fingerprinted_field_enters_its_fingerprint():
    from iqabench.adapters.quality_base import QualityGenerator
    from iqabench.contracts.options import Options

    @dataclasses.dataclass(frozen=True)
    class SharpOptions(Options):
        base: str = "tiny-sd"
        amount: float = option(1.0, "how sharp", rule=number(0, 10), fingerprint=True)

    class Sharp(QualityGenerator):
        options_class = SharpOptions

    gen = Sharp(GeneratorSpec.parse("sharp[amount=2,steps=2]"), CPU)
    assert gen.fingerprint()["amount"] == 2.0 and gen.fingerprint()["steps"] == 2
    with pytest.raises(SpecError, match=r"option amount=11 is invalid, expected a finite number >= 0 and <= 10"):
        Sharp(GeneratorSpec.parse("sharp[amount=11]"), CPU)


# -- issue 26: every value checked when the generator is built ------------------------------------------------
@pytest.mark.parametrize(("spec", "sentence"), [
    ("tiny-sd[steps=100000000]", "option steps=100000000 is invalid, expected an integer >= 1 and <= 1000"),
    ("tiny-sd[steps=1001]", "option steps=1001 is invalid, expected an integer >= 1 and <= 1000"),
    ("tiny-sd[steps=2.5]", "option steps=2.5 is invalid, expected an integer >= 1 and <= 1000"),
    (f"tiny-sd[steps={HUGE}]", "option steps=100000000000... (401 digits) is invalid, expected an integer >= 1"),
    ("tiny-sd[height=16384]", "option height=16384 is invalid, expected a positive multiple of 8 (pixels), at most "
                              "8192"),
    ("tiny-sd[width=0]", "option width=0 is invalid, expected a positive multiple of 8 (pixels)"),
    (f"tiny-sd[guidance_scale={HUGE}]", "option guidance_scale=100000000000... (401 digits) is invalid, expected a "
                                        "finite number >= 0"),
    ("tiny-sd[guidance_scale=-1]", "option guidance_scale=-1 is invalid, expected a finite number >= 0"),
    ("tiny-sd[guidance_scale=true]", "option guidance_scale=True is invalid, expected a finite number >= 0"),
    (f"tiny-sd[seed={2**63}]", f"option seed={2**63} is invalid, expected an integer >= 0 and <= 2**63 - 1"),
    ("tiny-sd[negative_prompt=3]", "option negative_prompt=3 is invalid, expected text"),
    (f"guidance:topiq_nr[base=tiny-sd,alpha={HUGE}]", "option alpha=100000000000... (401 digits) is invalid, "
                                                     "expected a finite number"),
    (f"guidance:topiq_nr[base=tiny-sd,metric_size={HUGE}]", "metric_size=100000000000... (401 digits) should be a "
                                                           "side in pixels (>= 8, at most 8192)"),
    ("guidance:topiq_nr[base=tiny-sd,metric_size=100000]", "metric_size=100000 should be a side in pixels"),
    (f"guidance:topiq_nr[base=tiny-sd,steps={HUGE}]", "option steps=100000000000... (401 digits) is invalid"),
])
def test_bad_option_values_are_one_sentence_when_the_generator_is_built(spec, sentence):
    with pytest.raises(SpecError) as bad:
        build_generator(spec, CPU)
    message = str(bad.value)
    assert sentence in message and "\n" not in message and len(message) < 300


def test_good_edge_values_pass():
    gen = build_generator(f"tiny-sd[steps=1000,height=8192,width=8,seed={INT64_MAX},guidance_scale=0]", CPU)
    assert gen.options["steps"] == 1000 and gen.options["guidance_scale"] == 0.0 and isinstance(
        gen.options["guidance_scale"], float)


def test_typed_options_apply_the_rules_in_python_too():
    with pytest.raises(ValueError, match="option steps=5000 is invalid, expected an integer >= 1 and <= 1000"):
        TinyOptions(steps=5000)
    assert TinyOptions(guidance_scale=7).guidance_scale == 7.0


def test_rules_read_in_one_glance():
    assert integer(1, 1000).expected == "an integer >= 1 and <= 1000"
    assert integer(0).expected == "an integer >= 0"
    assert number(0).expected == "a finite number >= 0"
    assert text(nonempty=True).expected == "a non-empty string"
    assert flag()(False) is False and flag().expected == "true or false"
    with pytest.raises(ValueError):
        flag()(0)
    with pytest.raises(ValueError):
        integer(0, 10)(True)  # a bool is not an integer here


def test_iqa_adapter_scale_overflow_is_one_sentence(tmp_path):
    from test_iqa_adapter_generator import tiny_checkpoint

    from iqabench.adapters.iqa_adapter.conditioning import TargetError

    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    with pytest.raises(SpecError, match=r"option scale=100000000000\.\.\. \(401 digits\) is invalid, expected a "
                                        "finite number"):
        build_generator(f"iqa-adapter:{checkpoint}[scale={HUGE}]", CPU)
    gen = build_generator(f"iqa-adapter:{checkpoint}", CPU)
    with pytest.raises(TargetError, match="int too large to convert to float"):  # an item's scale: one sentence
        gen.generate([WorkItem("p0", "a cat", 0, params={"scale": HUGE})])


# -- through the real CLI: exit 2, one sentence, nothing generated ---------------------------------------------
def _cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(("option", "shown"), [
    ("steps=100000000", "option steps=100000000 is invalid, expected an integer >= 1 and <= 1000"),
    (f"guidance_scale={HUGE}", "option guidance_scale=100000000000... (401 digits) is invalid, expected a finite "
                               "number >= 0"),
    (f"seed={2**64}", f"option seed={2**64} is invalid, expected an integer >= 0 and <= 2**63 - 1"),
    ("steps=" + "9" * 5000, "option 'steps' is a number of 5000 characters: give a number of sensible size"),
], ids=["steps", "guidance_scale-overflow", "seed-int64", "steps-5000-digits"])
def test_cli_refuses_a_bad_option_value_before_any_work(option, shown, tmp_path, capsys):
    code, err = _cli(["run", "scores", "-g", f"tiny-sd[{option}]", "--metrics", "entropy", "--limit", "1",
                      "--out", tmp_path], capsys)
    assert code == 2, err
    assert err.count("error:") == 1 and "Traceback" not in err and shown in err, err
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("run.json"))
