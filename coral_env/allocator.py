"""Keep freed tensor buffers mapped (glibc malloc tuning for CPU inference).

By default glibc returns every freed block above a sliding threshold (at most 32 MB) to the
kernel, and trims the heap top above 128 KB, so the next forward call page-faults the same
activations back in. On this 2-core machine that cost about a tenth of a scoring pass
(benchmarks/eval.md). ``tune_allocator`` raises those thresholds once per process; the CLI calls
it at start-up. Set ``CORAL_MALLOC_TUNING=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_done = False


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20, top_pad: int = 64 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap and keep up to ``trim_threshold``
    bytes of freed heap mapped. Returns whether glibc accepted the settings (False elsewhere)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("CORAL_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold),
            (_M_TRIM_THRESHOLD, trim_threshold),
            (_M_TOP_PAD, top_pad),
        )
    )
    _done = ok
    return ok


def release_free_memory() -> int:
    """Collect garbage, then hand the heap's free pages back to the kernel (glibc ``malloc_trim``),
    which the raised trim threshold would otherwise keep: a job calls it after dropping a model, so
    the next stage's peak does not stack on the last one's leftovers. Returns the bytes of resident
    memory released (0 where glibc is absent)."""
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return 0
    before = _resident_bytes()
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return max(0, before - _resident_bytes())


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
