"""A run whose results cannot be saved or rendered ends `failed` (not `running`); Markdown export without tabulate."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from iqabench.api import execute
from iqabench.contracts.results import Result
from iqabench.contracts.specs import RunSpec
from iqabench.engine.runner import Runner, RunOutcome
from iqabench.reports.tables import to_markdown


@pytest.mark.parametrize("broken", ["save_result", "render_report"])
def test_failed_save_or_render_marks_the_run_failed_with_its_error(tmp_path, monkeypatch, broken):
    import iqabench.reports as reports

    runner = Runner(RunSpec("scores", ["tiny-sd"], metrics=["entropy"], limit=1, seeds=[0]), tmp_path)

    def fake_execute(dry_run=False, **_):  # the generate/score stages are not what this test is about
        plan = runner.summarize_plan()
        runner.store.write_run_json(runner.run_id, runner.manifest("running", plan))
        return RunOutcome(runner.run_id, runner.store.run_dir(runner.run_id), plan, result=Result("scores"))

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "execute", fake_execute)
    monkeypatch.setattr(reports, broken, explode)
    with pytest.raises(OSError, match="disk full"):
        execute(runner)
    manifest = json.loads((runner.store.run_dir(runner.run_id) / "run.json").read_text())
    assert manifest["status"] == "failed"
    assert "disk full" in manifest["error"] and manifest["error"].endswith("disk full")


def test_markdown_export_falls_back_without_tabulate(monkeypatch):
    frame = pd.DataFrame({"generator": ["a|b", "c"], "score": [1.5, 2.25]})
    with_tabulate = to_markdown(frame, "note")
    monkeypatch.setitem(sys.modules, "tabulate", None)  # `import tabulate` now raises ImportError
    text = to_markdown(frame, "note")
    lines = text.splitlines()
    assert lines[0] == "| generator | score |" and lines[1] == "| :--- | ---: |"
    assert lines[2].startswith("| a\\|b | 1.5") and lines[3].startswith("| c | 2.25")
    assert text.endswith("\n\nnote\n") and "a\\|b" in with_tabulate
