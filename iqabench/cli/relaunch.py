"""``--num-processes N``: run the same command again under a launcher that starts N processes."""

from __future__ import annotations

import sys


def relaunch(num_processes: int) -> int:
    """Run this same command under N processes: accelerate on GPUs, torchrun (gloo) on CPU."""
    import subprocess

    import torch

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            argv.append(arg)
    if torch.cuda.is_available():
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                    "--num_processes", str(num_processes)]
    else:
        # --standalone: a free local port per run, so two runs on one machine do not fight over 29500.
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(num_processes)]
    return subprocess.call([*launcher, "-m", "iqabench", *argv])
