"""The CLI keeps freed host memory for reuse (glibc's mallopt), so CPU pipeline steps stop faulting pages in.

Each check runs in a fresh process: malloc's settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from iqabench.execution import host_allocator

pytestmark = pytest.mark.skipif(not host_allocator._glibc(), reason="mallopt is glibc's (Linux)")

# Three 12 MiB blocks allocated, touched and freed, five times over. glibc's adaptive thresholds hand the freed
# top of the heap back each round (the next round faults most of it in again, about 6000 pages); kept, it is reused.
FAULTS = r"""
import ctypes, json, resource, sys
applied = {}
if sys.argv[1] == "tuned":
    from iqabench.execution.host_allocator import keep_freed_host_memory
    applied = keep_freed_host_memory()
elif sys.argv[1] == "cli":
    from iqabench.cli import main
    from iqabench.execution import host_allocator
    try:
        main(["--help"])
    except SystemExit:
        pass
    applied = host_allocator.keep_freed_host_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 12 << 20
def one_round():
    blocks = [libc.malloc(size) for _ in range(3)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in reversed(blocks):
        libc.free(block)
one_round(); one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    one_round()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "applied": applied}))
"""


def _run(mode: str, **env: str) -> dict:
    import json

    clean = {k: v for k, v in os.environ.items()
             if k not in (*host_allocator.USER_SETTINGS_ENV, host_allocator.OPT_OUT_ENV)}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                          env={**clean, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_instead_of_faulted_back_in():
    untouched, tuned = _run("default"), _run("tuned")
    assert tuned["applied"] == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    assert untouched["faults"] > 20_000  # glibc's own behaviour: about 24 MiB faulted in again every round
    assert tuned["faults"] < 500


def test_the_cli_applies_it_once_per_process():
    assert _run("cli")["applied"] == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    assert _run("cli")["faults"] < 500


@pytest.mark.parametrize("env", [{"IQABENCH_HOST_MALLOC": "default"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"}])
def test_the_user_s_choice_wins(env):
    result = _run("tuned", **env)
    assert result["applied"] == {}
    assert result["faults"] > 20_000


def test_the_same_settings_as_environment_variables_for_other_processes():
    result = _run("default", **host_allocator.settings_as_environment())
    assert result["faults"] < 500
