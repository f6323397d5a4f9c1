"""How long the quick commands take, measured under the same machine load as ``python -c "import torch"``.

Issue 23 asks ``iqabench list metrics`` and an unknown-metric error to answer in under 2 s, and the closing
note wants those times plus ``--dry-run`` of the README's SDXL command "measured with the same machine load as
a plain ``python -c "import torch"``". On a shared machine load changes from one minute to the next, so each
command is *alternated* with the torch import (torch, command, torch, command, ...): both see the same load,
and the table gives each one's median next to the median of the torch imports run beside it, with the load
average (``os.getloadavg``) before and after. A command whose median is below torch's import did not import
torch (or did not have to wait for it).

    python perf/listing_speed.py                 # 5 alternations per command
    python perf/listing_speed.py --repeats 9 --json

Run it from the repository root with ``IQABENCH_ROOT`` pointing at the checkout. The commands run with
``HF_HUB_OFFLINE=1`` (the listing and the error never need the network; the dry run reports missing weights
in one table instead of downloading them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: name -> the iqabench arguments (run as ``python -m iqabench ...``) and the exit codes that are its answer
COMMANDS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "list metrics": (["list", "metrics"], (0,)),
    "unknown metric (list metrics topiq_mr)": (["list", "metrics", "topiq_mr"], (2,)),
    "unknown metric (run ... --metrics topiq_mr)": (["run", "relgain", "--generator", "sdxl", "--metrics",
                                                     "topiq_nr,topiq_mr"], (2,)),
    # README's SDXL command, with --dry-run; exit 2 where its weights are not here (the preflight's table).
    # --device is the script's --device (README: cuda; a machine without a GPU refuses cuda before planning).
    "README SDXL --dry-run": (["run", "relgain", "--generator", "sdxl", "--baseline", "sdxl[guidance_scale=1.0]",
                               "--prompts", "parti", "--limit", "200", "--metrics", "topiq_nr,laion_aes",
                               "--device", "{device}", "--dtype", "fp16", "--batch-size", "8", "--dry-run"], (0, 2)),
}
TORCH = [sys.executable, "-c", "import torch"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stderr[-400:]


def measure(name: str, args: list[str], codes: tuple[int, ...], repeats: int, env: dict[str, str]) -> dict:
    load_before = os.getloadavg()[0]
    torch_s, command_s = [], []
    for _ in range(repeats):
        torch_s.append(timed(TORCH, env)[0])
        seconds, code, tail = timed([sys.executable, "-m", "iqabench", *args], env)
        if code not in codes:
            raise SystemExit(f"{name}: exit code {code} (expected {codes}):\n{tail}")
        command_s.append(seconds)
    return {"command": name, "median_s": statistics.median(command_s), "torch_median_s": statistics.median(torch_s),
            "min_s": min(command_s), "max_s": max(command_s), "repeats": repeats, "exit": code,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternations per command (default 5)")
    parser.add_argument("--only", action="append", help="measure only commands whose name contains this")
    parser.add_argument("--json", action="store_true", help="one JSON line per command instead of the table")
    parser.add_argument("--device", default="auto", help="--device of the README command (README: cuda; default "
                                                         "auto, so a machine without a GPU plans it on the CPU)")
    opts = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IQABENCH_OFFLINE": "1", "COLUMNS": "80"}
    rows = []
    for name, (args, codes) in COMMANDS.items():
        if opts.only and not any(part in name for part in opts.only):
            continue
        args = [a.replace("{device}", opts.device) for a in args]
        rows.append(measure(name, args, codes, opts.repeats, env))
        if opts.json:
            print(json.dumps(rows[-1]), flush=True)
    if opts.json:
        return
    print(f"{'command':44} {'median':>7} {'import torch':>13} {'min-max':>12} {'exit':>4} {'load 1-min':>11}")
    for row in rows:
        print(f"{row['command'][:44]:44} {row['median_s']:6.2f}s {row['torch_median_s']:12.2f}s "
              f"{row['min_s']:5.2f}-{row['max_s']:5.2f}s {row['exit']:>4} "
              f"{row['load_before']:5.2f}>{row['load_after']:.2f}")
    print(f"medians of {opts.repeats} runs each, alternated with `python -c \"import torch\"`; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
