"""Keep freed host memory for reuse, so that CPU pipeline calls stop faulting their buffers back in.

Why: glibc's malloc returns memory to the operating system eagerly. Blocks above its ``mmap`` threshold are
unmapped when freed, and a free area at the top of the heap larger than its trim threshold is given back. Both
thresholds adapt to the program's history. A diffusion step on the CPU allocates and frees activations of a few
to a few tens of MiB, so whether they are reused or faulted in fresh, page by page, depends on how the heap
happens to lie. Measured on a 2-core VM (``perf/overhead.py`` records page faults per side) with an SD-1.5-like
pipeline at 256 px: in one 16-image, 10-step pair the plain diffusers script faulted 6 million pages and iqabench
41 million. One 2-image, 2-step call faulted 1.7-2.0 million pages and took 19.0-20.2 s; with the settings below,
the calls after the first faulted 50-80 thousand and took 16.8-17.3 s. PyTorch's CPU performance guide gives the
same reason for recommending jemalloc or tcmalloc.

What it sets (glibc's ``mallopt``, the same knobs as its ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables): blocks up to 32 MiB (glibc's largest allowed threshold) come
from the heap, and up to 1 GiB of freed heap is kept rather than trimmed. The price: the resident size stays near
the process's peak instead of falling back (+130 MiB in the call above), and freed heap below the top is never
returned, so a long CPU training run keeps its high-water mark. Blocks above 32 MiB (SD-1.5's attention at 512 px,
a VAE decoder's activations) are still mapped and unmapped each time. Pixels do not change: only where the memory
comes from does.

The CLI applies it once per process (``iqabench.cli``); a library user calls :func:`keep_freed_host_memory`.
Nothing is set when the C library is not glibc, when another allocator (jemalloc, tcmalloc via ``LD_PRELOAD``)
serves ``malloc``, when the user chose glibc's malloc settings themselves (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``: their choice wins), or when
``IQABENCH_HOST_MALLOC=default``.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
from collections.abc import Mapping

#: glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc refuses larger thresholds on 64-bit systems).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Freed memory at the top of the heap is kept up to this size.
TRIM_THRESHOLD_BYTES = 1 << 30
#: ``keep`` (the default) applies the settings; ``default`` leaves glibc's adaptive behaviour alone.
OPT_OUT_ENV = "IQABENCH_HOST_MALLOC"
CHOICES = ("keep", "default")
USER_SETTINGS_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_lock = threading.Lock()
_applied: dict[str, int] | None = None


def settings_as_environment() -> dict[str, str]:
    """The same settings as glibc environment variables (for a child process that is not iqabench)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}


def _glibc() -> bool:
    """Is this process's C library glibc? (``confstr`` answers at once; ``platform.libc_ver`` reads the binary.)"""
    try:
        return platform.system() == "Linux" and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # musl (no such name, or None), a platform without confstr
        return False


def _choice(environ: Mapping[str, str]) -> str:
    """The value of ``IQABENCH_HOST_MALLOC`` as compared: case and surrounding spaces do not matter."""
    return environ.get(OPT_OUT_ENV, "").strip().lower()


def left_to_the_user(environ: Mapping[str, str]) -> bool:
    """Did the user choose glibc's malloc settings (or ask iqabench to leave them) in this environment?"""
    if _choice(environ) == "default":
        return True
    return (any(name in environ for name in USER_SETTINGS_ENV)
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""))


def applies_in(environ: Mapping[str, str]) -> bool:
    """Would iqabench set its malloc thresholds in a process with this environment? (Not where the user chose,
    where the choice is not one it knows, or where the C library is not glibc.) The one rule :func:`_apply` and a
    benchmark giving a plain child the same settings both follow."""
    choice = _choice(environ)
    return (not choice or choice in CHOICES) and not left_to_the_user(environ) and _glibc()


def _glibc_serves_malloc(ctypes, process) -> bool:
    """Is ``malloc`` (as ``process``, this process's symbol table, resolves it) glibc's own? An allocator preloaded
    in front of it would ignore (or fake) ``mallopt``."""
    libc = ctypes.CDLL("libc.so.6")
    return (ctypes.cast(process.malloc, ctypes.c_void_p).value == ctypes.cast(libc.malloc, ctypes.c_void_p).value)


def keep_freed_host_memory() -> dict[str, int]:
    """Apply the settings to this process; returns what was set, empty when nothing was (see the module doc).

    Decided once per process: the first call's answer stands, later calls return it (malloc's settings cannot be
    taken back, and a changed environment afterwards would not describe this process).
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return dict(_applied)


def _apply() -> dict[str, int]:
    choice = _choice(os.environ)
    if choice and choice not in CHOICES:
        print(f"iqabench: {OPT_OUT_ENV}={choice!r} is not one of {', '.join(CHOICES)}; malloc is left as it is",
              file=sys.stderr)
    if not applies_in(os.environ):
        return {}
    try:
        import ctypes

        process = ctypes.CDLL(None)
        if not _glibc_serves_malloc(ctypes, process):
            return {}
        mallopt = process.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (ImportError, OSError, AttributeError):  # no ctypes, a static or unusual build: leave malloc as it is
        return {}
    applied = {}
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        applied["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    if mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1:
        applied["trim_threshold"] = TRIM_THRESHOLD_BYTES
    return applied
