"""A run imports only what it uses (issue 29): the one benchmark asked for, and no plotting stack before analysis."""

import subprocess
import sys
import textwrap

from iqabench.contracts.registry import BENCHMARKS

# Runs in a fresh interpreter so the suite's own imports do not hide what a real `run` pulls in.
PROBE = textwrap.dedent("""
    import json, sys
    import iqabench.benchmarks.scores as scores_module
    from iqabench import RunSpec, run

    seen = {}
    original = scores_module.Scores.analyze

    def analyze(self, ctx):
        seen["modules"] = sorted(sys.modules)
        return original(self, ctx)

    scores_module.Scores.analyze = analyze
    run(RunSpec("scores", ["tiny-sd"], metrics=["entropy"], prompts="smoke", limit=1, seeds=[0]),
        out=sys.argv[1], report=False)
    print(json.dumps(seen["modules"]))
""")


def test_run_of_scores_imports_no_other_benchmark_and_no_plotting_before_analysis(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    benchmarks = {m for m in modules if m.startswith("iqabench.benchmarks.")}
    assert benchmarks == {"iqabench.benchmarks.scores"}
    # scipy.stats and jinja2 are not on the list: diffusers' schedulers import scipy.stats and transformers
    # imports jinja2 at module level, so every diffusers script (the plain one of perf/overhead.py too) pays them
    for heavy in ("matplotlib", "seaborn", "pandas.io.formats.style", "iqabench.analysis.plotting",
                  "iqabench.reports"):
        assert heavy not in modules, f"{heavy} was imported before analysis"


RESUME = textwrap.dedent("""
    import json, sys
    from iqabench import RunSpec, run

    outcome = run(RunSpec("scores", ["tiny-sd"], metrics=["piqe", "entropy"], prompts="smoke", limit=1, seeds=[0]),
                  out=sys.argv[1])
    print(json.dumps({"unchanged": outcome.unchanged, "modules": sorted(sys.modules)}))
""")


def test_resume_of_a_finished_run_imports_no_plotting_stack_and_no_scipy(tmp_path):
    """The resume's result stands (issue 29): nothing is drawn or analysed, so nothing of the sort is imported."""
    import json

    seen = []
    for _ in range(2):  # the run, then its resume
        done = subprocess.run([sys.executable, "-c", RESUME, str(tmp_path / "out")], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        seen.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [s["unchanged"] for s in seen] == [False, True]
    assert "iqabench.reports.render" in seen[0]["modules"]  # the probe sees what a run that renders imports
    assert "matplotlib" not in seen[0]["modules"]  # scores draws no figure, so not even the first run needs it
    for heavy in ("matplotlib", "seaborn", "scipy", "iqabench.analysis.plotting", "iqabench.reports.render", "jinja2"):
        assert heavy not in seen[1]["modules"], f"{heavy} was imported by a resume whose result stands"


def test_builtin_index_names_the_module_that_registers_each_builtin_benchmark():
    import importlib

    index = BENCHMARKS._builtin_index
    for name in BENCHMARKS.names():  # a full load: every built-in and entry point
        entry = BENCHMARKS.get(name)
        if entry.factory.__module__.startswith("iqabench.benchmarks."):
            assert name in index, f"built-in benchmark {name!r} is missing from the registry's builtin_index"
    for name, module in index.items():
        importlib.import_module(module)
        assert BENCHMARKS.get(name).factory.__module__ == module


def test_archs_known_to_read_no_file_read_none():
    """The shortcut in pyiqa_weight_files (no arch import) gives what reading the arch module gives."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    from iqabench.metrics import pyiqa_weights

    checked = set()
    for name, config in DEFAULT_CONFIGS.items():
        arch_type = config["metric_opts"]["type"]
        if arch_type not in pyiqa_weights._NO_FILES:
            continue
        _, module, opts = pyiqa_weights._arch(name)
        assert not getattr(module, "default_model_urls", None), f"{arch_type} has weight URLs now"
        assert pyiqa_weights._BACKBONES[arch_type](opts) == [], f"{arch_type} has a backbone"
        assert pyiqa_weights.pyiqa_weight_files(name) == ([], True)
        checked.add(arch_type)
    assert checked == pyiqa_weights._NO_FILES
