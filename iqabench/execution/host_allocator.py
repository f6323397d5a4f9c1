"""Keep freed host memory for reuse, so that CPU pipeline calls stop faulting their buffers back in.

Why: glibc's malloc returns memory to the operating system eagerly. Blocks above its ``mmap`` threshold are
unmapped when freed, and a free area at the top of the heap larger than its trim threshold is given back. Both
thresholds adapt to the program's history. A diffusion step on the CPU allocates and frees activations of a few
to a few tens of MiB, so whether they are reused or faulted in fresh, page by page, depends on how the heap
happens to lie. Measured on a 2-core VM (``perf/overhead.py`` records page faults per side) with an SD-1.5-like
pipeline at 256 px: two processes doing the same work (16 images, 10 steps) faulted 6 million and 41 million
pages. One 2-image, 2-step call faulted 1.7-2.0 million pages and took 19.0-20.2 s; with the settings below, the
calls after the first faulted 50-80 thousand and took 16.8-17.3 s. PyTorch's CPU performance guide gives the
same reason for recommending jemalloc or tcmalloc.

What it sets (glibc's ``mallopt``, the same knobs as its ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables): blocks up to 32 MiB (glibc's largest allowed threshold) come
from the heap, and up to 1 GiB of freed heap is kept rather than trimmed. The price is a resident size up to that
much above the peak the process needed anyway. Pixels do not change: only where the memory comes from does.

The CLI applies it once per process (``iqabench.cli``); a library user calls :func:`keep_freed_host_memory`.
Nothing is set when malloc is not glibc's, when the user set either environment variable (their choice wins), or
when ``IQABENCH_HOST_MALLOC=default``.
"""

from __future__ import annotations

import os
import platform

#: glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc refuses larger thresholds on 64-bit systems).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Freed memory at the top of the heap is kept up to this size.
TRIM_THRESHOLD_BYTES = 1 << 30
#: ``default`` leaves glibc's adaptive behaviour alone.
OPT_OUT_ENV = "IQABENCH_HOST_MALLOC"
USER_SETTINGS_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: dict[str, int] | None = None


def settings_as_environment() -> dict[str, str]:
    """The same settings as glibc environment variables (for a child process that is not iqabench)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}


def _glibc() -> bool:
    """Is this process's C library glibc? (``confstr`` answers at once; ``platform.libc_ver`` reads the binary.)"""
    try:
        return platform.system() == "Linux" and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # musl, or a platform without the name
        return False


def keep_freed_host_memory() -> dict[str, int]:
    """Apply the settings to this process (once); returns what was set, empty when nothing was (see module doc)."""
    global _applied
    if _applied is not None:
        return dict(_applied)
    _applied = {}
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "default":
        return {}
    if any(name in os.environ for name in USER_SETTINGS_ENV):
        return {}
    if not _glibc():
        return {}
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a static or unusual build: leave malloc as it is
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        _applied["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    if mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1:
        _applied["trim_threshold"] = TRIM_THRESHOLD_BYTES
    return dict(_applied)
