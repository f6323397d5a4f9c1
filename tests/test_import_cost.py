"""A run imports only what it uses (issue 29): the one benchmark asked for, and no plotting stack before analysis."""

import subprocess
import sys
import textwrap

from iqabench.registry import BENCHMARKS

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
    for heavy in ("matplotlib", "seaborn", "iqabench.plotting", "iqabench.reports"):
        assert heavy not in modules, f"{heavy} was imported before analysis"


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
