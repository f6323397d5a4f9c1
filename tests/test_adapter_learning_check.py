"""The IQA-Adapter learning check of issue 3, run in CI because it fits (~3 minutes on 2 CPU cores).

A tiny adapter trained on synthetic images whose entropy varies must generate images whose measured entropy
rises with the requested target percentile: mean Spearman(target, measured) >= 0.8 over prompts and seeds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "perf" / "adapter_learning.py"


def test_measured_quality_rises_with_the_target():
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "300", "--threads", "1"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n"] == 6
    assert summary["train_loss_last20"] < summary["train_loss_first20"]
    assert summary["mean_spearman"] >= 0.8, done.stdout
