"""The plugin examples in docs/plugins.md, written to files as they stand and run through `iqabench run --plugin`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def examples() -> dict[str, str]:
    found = re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", DOC.read_text("utf-8"), flags=re.S)
    return dict(found)


def test_each_plugin_example_is_short_and_runs_through_the_cli(tmp_path):
    code = examples()
    assert set(code) == {"generator", "metric", "benchmark"}
    for kind, text in code.items():
        assert len(text.strip().splitlines()) <= 15, f"the {kind} example is longer than 15 lines"
    plugins = []
    for kind, text in code.items():
        (tmp_path / f"{kind}.py").write_text(text, encoding="utf-8")
        plugins += ["--plugin", str(tmp_path / f"{kind}.py")]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "iqabench", "run", "mean-score", "-g", "few-step-sd", "--metrics",
               "colorfulness", "--limit", "2", "--device", "cpu", "--run-id", "docs", "--out", str(out), *plugins]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert (out / "runs" / "docs" / "report.html").is_file()
    table = pd.read_csv(next((out / "runs" / "docs").rglob("mean_score*.csv")))
    assert list(table["generator"]) == ["few-step-sd"] and list(table["metric"]) == ["colorfulness"]
    assert 0 < table["score"].iloc[0] < 1
    listing = subprocess.run([sys.executable, "-m", "iqabench", "list", "generators", "--options", "--plugin",
                              str(tmp_path / "generator.py")], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert listing.returncode == 0, listing.stderr
    table = listing.stdout.split("few-step-sd", 1)[1].split("└", 1)[0]  # its own table only, not the next one's
    rows = [line for line in table.splitlines() if "│" in line]
    cells = {r.split("│")[1].strip(): [c.strip() for c in r.split("│")[2:4]] for r in rows[:8]}
    assert cells["steps"] == ["int", "2"] and cells["height"] == ["int", "64"] and cells["seed"] == ["int", "0"]
