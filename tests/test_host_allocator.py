"""The CLI keeps freed host memory for reuse (glibc's mallopt), so CPU pipeline steps stop faulting pages in.

Each check runs in a fresh process: malloc's settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iqabench.execution import host_allocator

pytestmark = pytest.mark.skipif(not host_allocator._glibc(), reason="mallopt is glibc's (Linux)")

SETTINGS = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}

# Three 12 MiB blocks allocated, touched and freed, five times over. glibc's adaptive thresholds hand the freed
# top of the heap back each round (the next round faults most of it in again, about 6000 pages); kept, it is
# reused. Transparent huge pages are off for the child, so a host with THP "always" counts 4 KiB pages too.
FAULTS = r"""
import ctypes, json, resource, sys
libc = ctypes.CDLL(None)
libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
applied = {}
if sys.argv[1] == "tuned":
    from iqabench.execution.host_allocator import keep_freed_host_memory
    applied = keep_freed_host_memory()
elif sys.argv[1] == "preloaded":  # as if jemalloc or tcmalloc served malloc
    from iqabench.execution import host_allocator
    host_allocator._glibc_serves_malloc = lambda ctypes, process: False
    applied = host_allocator.keep_freed_host_memory()
elif sys.argv[1] == "cli":  # the settings the CLI's main() applied, read without applying them again
    from iqabench.cli import main
    from iqabench.execution import host_allocator
    try:
        main(["--help"])
    except SystemExit:
        pass
    applied = host_allocator._applied
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
    """The child's result, in an environment without any malloc choice of this shell's."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES", host_allocator.OPT_OUT_ENV)}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env={**clean, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_freed_memory_is_reused_instead_of_faulted_back_in():
    untouched, tuned = _run("default"), _run("tuned")
    assert tuned["applied"] == SETTINGS
    assert untouched["faults"] > 20_000  # glibc's own behaviour: about 24 MiB faulted in again every round
    assert tuned["faults"] < 500


def test_the_cli_applies_it_once_per_process():
    result = _run("cli")
    assert result["applied"] == SETTINGS  # None had main() not applied them
    assert result["faults"] < 500


@pytest.mark.parametrize("env", [{"IQABENCH_HOST_MALLOC": "default"}, {"IQABENCH_HOST_MALLOC": " Default "},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_user_s_choice_wins(env):
    result = _run("tuned", **env)
    assert result["applied"] == {}
    assert result["faults"] > 20_000


def test_other_tunables_are_not_a_malloc_choice():
    assert _run("tuned", GLIBC_TUNABLES="glibc.pthread.rseq=0")["applied"] == SETTINGS


def test_an_unknown_choice_says_so_and_leaves_malloc_alone():
    result = _run("tuned", IQABENCH_HOST_MALLOC="off")
    assert result["applied"] == {}
    assert "IQABENCH_HOST_MALLOC='off' is not one of keep, default" in result["stderr"]
    assert _run("tuned", IQABENCH_HOST_MALLOC="keep")["applied"] == SETTINGS


def test_a_preloaded_allocator_is_left_alone():
    assert _run("tuned")["applied"] == SETTINGS  # a clean child: glibc's own malloc serves it
    assert _run("preloaded")["applied"] == {}


@pytest.mark.parametrize("env", [{}, {"IQABENCH_HOST_MALLOC": "keep"}, {"IQABENCH_HOST_MALLOC": "default"},
                                 {"IQABENCH_HOST_MALLOC": "off"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
                                 {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}])
def test_applies_in_says_what_a_child_with_that_environment_does(env):
    """perf/overhead.py gives a plain child the settings only where an iqabench child would apply them."""
    assert host_allocator.applies_in(env) == (_run("tuned", **env)["applied"] == SETTINGS)


def test_the_same_settings_as_environment_variables_for_other_processes():
    env = host_allocator.settings_as_environment()
    assert host_allocator.left_to_the_user(env)  # so an iqabench child given them would not apply its own
    assert _run("default", **env)["faults"] < 500
