"""Module layout rules of issue 14 that a refactor could silently undo."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_iqabench_loads_no_plugin_package_and_no_report_module():
    loaded = _modules_after("import iqabench")
    forbidden = [m for m in loaded if m.startswith(("iqabench.adapters", "iqabench.benchmarks", "iqabench.reports",
                                                    "iqabench.cli"))]
    assert not forbidden, f"`import iqabench` loaded {forbidden}"
    assert "torch" not in loaded  # public names load lazily (PEP 562), so `iqabench --help` stays fast
    touched = _modules_after("import iqabench; assert iqabench.run.__module__ == 'iqabench.api'")
    assert "iqabench.api" in touched  # iqabench.run is the API layer's run
    forbidden = [m for m in touched if m.startswith(("iqabench.adapters", "iqabench.benchmarks", "iqabench.reports",
                                                     "iqabench.cli"))]
    assert not forbidden, f"`iqabench.run` loaded {forbidden}"


def test_the_plugin_api_exports_what_docs_plugins_md_names():
    """docs/plugins.md says a plugin imports from ``iqabench.api`` only: the errors it raises, the files it declares
    and the batched pass it runs come from there too, and the page names no deeper module to import."""
    import re

    import iqabench.api as api
    from iqabench.contracts.errors import UserError, UserInputError
    from iqabench.contracts.needs import Need, declare
    from iqabench.execution.batching import BatchPolicy, run_batched

    for name, value in {"UserError": UserError, "UserInputError": UserInputError, "Need": Need, "declare": declare,
                        "run_batched": run_batched, "BatchPolicy": BatchPolicy}.items():
        assert getattr(api, name) is value and name in api.__all__, name
    page = (ROOT / "docs" / "plugins.md").read_text("utf-8")
    deeper = re.findall(r"`(iqabench\.(?:contracts|execution|io|engine)\.[\w.]+)", page)
    assert not deeper, f"docs/plugins.md points plugins below iqabench.api: {deeper}"
    named = set(re.findall(r"`iqabench\.api\.(\w+)", page))
    assert named and all(hasattr(api, n) for n in named), sorted(n for n in named if not hasattr(api, n))


def test_renamed_modules_leave_nothing_behind():
    assert importlib.util.find_spec("iqabench.testing") is None
    assert not (ROOT / "iqabench" / "testing.py").exists() and not (ROOT / "bench").exists()
    assert not (ROOT / "reports" / "figures.py").exists()
    assert (ROOT / "perf" / "overhead.py").is_file() and (ROOT / "iqabench" / "support" / "tiny_models.py").is_file()


def test_plugin_commands_come_from_the_entry_point_group():
    names = {ep.name for ep in importlib.metadata.entry_points(group="iqabench.cli")}
    assert {"acpo", "geneval", "iqa-adapter", "study"} <= names
    source = "\n".join(p.read_text("utf-8") for p in (ROOT / "iqabench" / "cli").glob("*.py"))
    for plugin in ("adapters", "benchmarks"):
        assert f".{plugin}" not in source.replace("iqabench.cli", ""), f"the core CLI imports {plugin}"
    from typer.main import get_command

    from iqabench.cli import app

    command = get_command(app)
    assert {"run", "report", "list", "score-dataset", "geneval-summary", "train", "study"} <= set(command.commands)
    assert {"iqa-adapter", "acpo"} <= set(command.commands["train"].commands)
    assert {"export", "analyze"} <= set(command.commands["study"].commands)


def test_plugin_cli_modules_import_nothing_heavy_at_load():
    for module in ("adapters/iqa_adapter/cli.py", "adapters/acpo/cli.py", "benchmarks/study/cli.py",
                   "benchmarks/geneval/cli.py"):
        top_level = [line for line in (ROOT / module).read_text("utf-8").splitlines()
                     if line.startswith(("import ", "from "))]
        heavy = [line for line in top_level if any(h in line for h in ("torch", "diffusers", "pandas", "numpy"))]
        assert not heavy, f"{module} imports {heavy} at load time; import inside the command"


def test_no_benchmark_builds_a_generator_or_parses_run_specs_by_hand():
    for path in (ROOT / "benchmarks").rglob("*.py"):
        text = path.read_text("utf-8")
        assert "build_generator" not in text, f"{path.relative_to(ROOT)} builds a generator; ask the GeneratorPool"
        for by_hand in ("GeneratorSpec(", "GeneratorSpec.parse"):
            assert by_hand not in text, f"{path.relative_to(ROOT)} handles spec strings by hand; ask the GeneratorPool"


def test_pool_wraps_a_base_in_one_canonical_spelling():
    from iqabench.contracts.generators import GeneratorPool

    wrapped = GeneratorPool.wrap("guidance", "topiq_nr", "tiny-sd[steps=2]", alpha=30.0)
    assert wrapped == "guidance:topiq_nr[alpha=30.0,base=tiny-sd,steps=2]"
    assert GeneratorPool.wrap("guidance", "topiq_nr", "tiny-sd[ steps = 2 ]", alpha=30.0) == wrapped
    assert GeneratorPool.family(wrapped) == "guidance" and GeneratorPool.family("tiny-sd:x[steps=2]") == "tiny-sd"


def test_runner_builds_each_generator_spec_once_and_hands_baselines_to_analysis(tmp_path, monkeypatch):
    from iqabench.contracts.registry import GENERATORS
    from iqabench.contracts.specs import RunSpec
    from iqabench.engine.runner import Runner

    entry = GENERATORS.get("tiny-sd")
    built: list[str] = []
    original = entry.factory

    def counting(spec, runtime):
        built.append(str(spec))
        return original(spec, runtime)

    monkeypatch.setattr(entry, "factory", counting)
    spec = RunSpec("relgain", ["tiny-sd", "tiny-sd[steps=2]", "tiny-sd"], metrics=["entropy"], limit=1)
    runner = Runner(spec, tmp_path)
    assert sorted(built) == sorted(set(built)) == sorted(["tiny-sd", "tiny-sd[steps=2]",
                                                           "tiny-sd[guidance_scale=1.0]",
                                                           "tiny-sd[guidance_scale=1.0,steps=2]"])
    seen: dict = {}
    monkeypatch.setattr(runner.benchmark, "analyze", lambda ctx: seen.setdefault("ctx", ctx))
    runner.analyze()
    ctx = seen["ctx"]
    assert ctx.generators is runner.pool and len(built) == 4  # analysis built nothing new
    assert ctx.baselines["tiny-sd"] == "tiny-sd[guidance_scale=1.0]"
    assert ctx.baselines["tiny-sd[guidance_scale=1.0]"] is None  # a baseline at CFG 1 names none


def test_two_spellings_of_one_spec_are_one_generator_and_one_manifest_entry(tmp_path, monkeypatch):
    import iqabench.engine.planning as planning_module
    import iqabench.engine.runner as runner_module
    from iqabench.benchmark import PlannedItem
    from iqabench.contracts.generators import WorkItem
    from iqabench.contracts.registry import GENERATORS
    from iqabench.contracts.specs import RunSpec

    entry = GENERATORS.get("tiny-sd")
    built: list[str] = []
    original = entry.factory
    monkeypatch.setattr(entry, "factory", lambda spec, runtime: built.append(str(spec)) or original(spec, runtime))
    item = WorkItem("p0", "a red cube", 0)
    spellings = ["tiny-sd[steps=2,guidance_scale=1.0]", "tiny-sd[guidance_scale=1.0,steps=2]"]
    monkeypatch.setattr(planning_module, "plan_with",
                        lambda benchmark, spec, pool: [PlannedItem(s, item) for s in spellings])
    runner = runner_module.Runner(RunSpec("relgain", ["tiny-sd"], metrics=["entropy"], limit=1), tmp_path)
    assert built == ["tiny-sd[guidance_scale=1.0,steps=2]"]
    assert list(runner.generators) == ["tiny-sd[guidance_scale=1.0,steps=2]"]
    assert list(runner.manifest("planned")["generators"]) == ["tiny-sd[guidance_scale=1.0,steps=2]"]
    assert runner.image_keys[0] == runner.image_keys[1]


def test_quality_generator_own_options_follow_the_typed_options_and_base_defaults_to_the_option():
    from dataclasses import dataclass

    from iqabench.adapters.acpo.generator import AcpoGenerator
    from iqabench.adapters.guidance.generator import GuidanceGenerator, GuidanceOptions
    from iqabench.adapters.iqa_adapter.generator import IQAAdapterGenerator
    from iqabench.adapters.quality_base import QualityGenerator
    from iqabench.contracts.options import Options
    from iqabench.contracts.specs import GeneratorSpec, SpecError
    from iqabench.execution.runtime import Runtime

    for cls in (GuidanceGenerator, IQAAdapterGenerator, AcpoGenerator):
        assert cls.own_options == cls.options_class.defaults() and "base" in cls.own_options
    assert GuidanceGenerator.own_options["base"] == GuidanceOptions.defaults()["base"] == "sdxl"

    @dataclass(frozen=True)
    class SharpOptions(Options):
        base: str = "tiny-sd"
        amount: float = 1.0

    class Sharp(QualityGenerator):
        options_class = SharpOptions

    assert Sharp.own_options == {"base": "tiny-sd", "amount": 1.0}
    gen = Sharp(GeneratorSpec.parse("sharp[amount=2,steps=2]"), Runtime(device="cpu"))
    assert str(gen.base_spec) == "tiny-sd" and gen.settings.amount == 2
    assert gen.baseline().startswith("tiny-sd[") and "steps=2" in gen.baseline() and "amount" not in gen.baseline()
    with pytest.raises(SpecError, match="takes no ':x' part"):  # the spec's own base= is the one built
        Sharp(GeneratorSpec.parse("sharp[base=tiny-sd:x]"), Runtime(device="cpu"))


def test_fingerprint_class_label_is_derived_from_the_class():
    """A subclass that may change pixels gets its own label (hence its own cache keys) unless it opts in."""
    from iqabench.adapters.acpo.generator import AcpoGenerator
    from iqabench.adapters.diffusers_base import DiffusersGenerator
    from iqabench.adapters.guidance.generator import GuidanceGenerator
    from iqabench.adapters.iqa_adapter.generator import IQAAdapterGenerator
    from iqabench.adapters.quality_base import QualityGenerator
    from iqabench.contracts.generators import build_generator
    from iqabench.execution.runtime import Runtime
    from iqabench.support.tiny_models import tiny_sd_pipeline

    assert [c.fingerprint_class for c in (DiffusersGenerator, IQAAdapterGenerator, GuidanceGenerator,
                                          AcpoGenerator)] == ["diffusers-base/v1", "iqa-adapter/v1", "guidance/v1",
                                                              "acpo/v1"]
    assert issubclass(GuidanceGenerator, QualityGenerator) and issubclass(AcpoGenerator, QualityGenerator)

    class Sharper(DiffusersGenerator):
        pass

    class SameAsParent(DiffusersGenerator):
        fingerprint_class = DiffusersGenerator.fingerprint_class

    runtime = Runtime("cpu", "fp32", 1)
    reference = build_generator("tiny-sd", runtime)
    kwargs = {"source": reference.source, "defaults": dict(reference.options), "tiny_builder": tiny_sd_pipeline}
    spec = reference.spec
    assert Sharper.fingerprint_class.endswith("Sharper/v1")
    assert Sharper(spec, runtime, **kwargs).fingerprint() != reference.fingerprint()
    assert SameAsParent(spec, runtime, **kwargs).fingerprint() == reference.fingerprint()


def test_typed_options_validate_and_document_each_family():
    import pytest
    from typer.testing import CliRunner

    from iqabench.adapters.guidance.generator import GuidanceOptions
    from iqabench.cli import app
    from iqabench.contracts.specs import SpecError

    settings = GuidanceOptions.parse({"alpha": 5, "decode": "x0", "steps": 3}, "generator 'x'")
    assert settings.alpha == 5 and settings.decode == "x0" and GuidanceOptions.defaults()["decode"] == "z"
    with pytest.raises(SpecError, match="generator 'x': decode 'y' is unknown"):
        GuidanceOptions.parse({"decode": "y"}, "generator 'x'")
    with pytest.raises(SpecError, match="metric_size"):
        GuidanceOptions.parse({"metric_size": 3}, "generator 'x'")
    listed = CliRunner().invoke(app, ["list", "generators", "--options"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for expected in ("decode", "neg_k", "lora.json", "weights variant", "plus every option of its base model"):
        assert expected in listed.output


def test_gradcam_guided_metrics_option_keeps_the_old_targets_spelling():
    import warnings

    from iqabench.benchmarks.adversarial_gradcam import AdversarialGradCAM
    from iqabench.contracts.specs import RunSpec

    bench = AdversarialGradCAM()
    assert bench._targets(RunSpec("adversarial-gradcam", [], options={"guided_metrics": "piqe/entropy"})) == [
        "piqe", "entropy"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bench._targets(RunSpec("adversarial-gradcam", [], options={"targets": "piqe"})) == ["piqe"]
    assert any("guided_metrics=" in str(w.message) for w in caught if issubclass(w.category, FutureWarning))
