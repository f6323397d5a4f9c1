"""The IQA-Adapter learning check of issue 3, a short variant run in CI (about 40 s on one core).

A tiny adapter trained on synthetic images whose entropy varies must generate images whose measured entropy
rises with the requested target percentile: mean Spearman(target, measured) >= 0.8 over prompts and seeds.

The suite trains 150 steps at twice the script's learning rate and samples with 10 steps (mean Spearman 0.97);
the full check, 300 steps and 20 sampling steps (0.98, about 75 s), is ``python perf/adapter_learning.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "adapter_learning.py"


def test_measured_quality_rises_with_the_target():
    fast = ["--steps", "150", "--lr", "4e-3", "--inference-steps", "10", "--threads", "1"]
    done = subprocess.run([sys.executable, str(SCRIPT), *fast], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n"] == 6 and summary["steps"] == 150
    assert summary["train_loss_last20"] < summary["train_loss_first20"]
    assert summary["mean_spearman"] >= 0.8, done.stdout
