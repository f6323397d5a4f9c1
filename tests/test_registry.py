import textwrap

import pytest

from iqabench.contracts.registry import (
    GENERATORS,
    METRICS,
    Entry,
    Registry,
    RegistryError,
    UnknownNameError,
    load_plugin,
)


def test_unknown_generator_suggests_close_match():
    with pytest.raises(UnknownNameError) as info:
        GENERATORS.get("tiny-sdd")
    message = str(info.value)
    assert "unknown generator 'tiny-sdd'" in message
    assert "'tiny-sd'" in message
    assert "iqabench list generators" in message


def test_unknown_metric_suggests_pyiqa_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'piqe'"):
        METRICS.get("piqee")


def test_duplicate_registration_is_refused():
    registry = Registry("thing", (), "iqabench.none")
    registry.add(Entry("a", lambda: 1))
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(Entry("a", lambda: 2))
    registry.add(Entry("a", lambda: 3), overwrite=True)
    assert registry.get("a").factory() == 3


def test_bad_names_are_refused():
    registry = Registry("thing", (), "iqabench.none")
    for bad in ["", " a", "a[b]", "a,b"]:
        with pytest.raises(RegistryError):
            registry.add(Entry(bad, lambda: 1))


def test_plugin_file_registers_a_benchmark(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(textwrap.dedent('''
        from iqabench.benchmark import BaseBenchmark, register_benchmark

        @register_benchmark("plugin-bench-test", description="from a user file")
        class PluginBench(BaseBenchmark):
            def plan(self, spec):
                return []
    '''))
    from iqabench.contracts.registry import BENCHMARKS

    load_plugin(str(plugin))
    try:
        assert BENCHMARKS.get("plugin-bench-test").description == "from a user file"
    finally:
        BENCHMARKS.remove("plugin-bench-test")


def test_plugin_file_loaded_twice_registers_once(tmp_path):
    """`iqabench run --plugin f.py` loads the file in the CLI and again in the Runner (spec.plugins)."""
    plugin = tmp_path / "twice_plugin.py"
    plugin.write_text(textwrap.dedent('''
        from iqabench.benchmark import BaseBenchmark, register_benchmark

        @register_benchmark("plugin-twice-test")
        class PluginBench(BaseBenchmark):
            def plan(self, spec):
                return []
    '''))
    from iqabench.contracts.registry import BENCHMARKS

    try:
        load_plugin(str(plugin))
        load_plugin(str(plugin))  # used to raise RegistryError: already registered
        assert "plugin-twice-test" in BENCHMARKS
    finally:
        BENCHMARKS.remove("plugin-twice-test")


def test_readme_plugin_example_runs_from_the_cli(tmp_path):
    import subprocess
    import sys

    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(textwrap.dedent('''
        import torch
        from iqabench import register_metric

        @register_metric("sharpness", lower_better=False, differentiable=True, version="1")
        def build(device):
            """Mean gradient magnitude: a toy no-reference sharpness score."""
            class Sharpness(torch.nn.Module):
                def forward(self, x):
                    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
            return Sharpness().to(device)
    '''))
    done = subprocess.run([sys.executable, "-m", "iqabench", "run", "relgain", "--plugin", str(plugin), "--generator",
                           "tiny-sd", "--metrics", "sharpness,piqe", "--limit", "1", "--dry-run", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 unique images" in done.stderr


def test_plugin_module_that_does_not_exist_is_a_clear_error():
    with pytest.raises(ImportError, match="neither a .py file nor an importable module"):
        load_plugin("no_such_module_xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plugin("missing_plugin.py")


def test_entry_point_plugins_are_loaded(monkeypatch):
    import importlib.metadata as md

    def factory():
        """An entry-point benchmark."""

    class FakeEntryPoint:
        name = "ep-bench"
        value = "x:y"

        def load(self):
            return factory

    registry = Registry("benchmark", (), "iqabench.benchmarks")
    monkeypatch.setattr(md, "entry_points", lambda group: [FakeEntryPoint()] if group == "iqabench.benchmarks" else [])
    assert registry.get("ep-bench").factory is factory
    assert registry.get("ep-bench").description == "An entry-point benchmark."


def test_weights_status_wording():
    assert Entry("a", lambda: 1).weights_status() == "none needed"
    assert Entry("a", lambda: 1, weights=lambda: (True, "in ~/x")).weights_status() == "present: in ~/x"
    assert Entry("a", lambda: 1, weights=lambda: (False, "not in ~/x")).weights_status() == "missing: not in ~/x"
    assert Entry("a", lambda: 1, weights=lambda: (None, "uses its base model's")).weights_status() == (
        "uses its base model's")
    assert GENERATORS.get("sdxl").weights_status().startswith(("present", "missing"))


def test_plugin_with_a_syntax_error_is_one_sentence(tmp_path):
    import subprocess
    import sys

    broken = tmp_path / "broken_plugin.py"
    broken.write_text("def oops(:\n    pass\n")
    with pytest.raises(ImportError, match="syntax error at line 1"):
        load_plugin(str(broken))
    done = subprocess.run([sys.executable, "-m", "iqabench", "list", "metrics", "--plugin", str(broken)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "syntax error at line 1" in done.stderr and "Traceback" not in done.stderr
