"""Fixed heap thresholds for a long-lived trial process (glibc).

glibc's malloc serves a block of at least ``M_MMAP_THRESHOLD`` bytes with its own mapping and
returns the top of the heap to the kernel once more than ``M_TRIM_THRESHOLD`` of it is free.
Both start small (128 KiB) and move with the process's history: each freed mapped block raises the
mmap threshold to its size (at most 32 MiB on 64-bit) and the trim threshold to twice that. A trial
alternates two allocation patterns, programming (the draws' words, the programmed cells, the read
operands) and the forward (activations, input codes), and under the moving thresholds each switch
hands pages back and the next pass faults them in again, zero-filled: 906, 0 and 344 minor page
faults per warm LeNet-5 digits trial in three fresh runs of one script on the 2-core VM (what ran
before the trials differed), none in a loop of either pattern alone. In alternating fresh
processes the first forward after a programming was 0.25-2.1 ms slower than a repeated one with
the thresholds moving, -1.0 to +0.23 ms with them fixed (README, Benchmarks).
:func:`steady_heap` fixes the thresholds at the values the dynamic rule tends to (32 MiB mapped,
64 MiB kept at the top), so they no longer depend on the order of allocations: 0-4 faults a trial
in those runs, and a freed block under 32 MiB is reused instead of remapped.
At most 64 MiB of freed heap stays resident; blocks of 32 MiB and more (large IR-drop solve
chunks, large activations) are still mapped and unmapped each time, where the faults are small
beside the work on them.

Arithmetic is untouched: only where memory comes from changes. The trial worker and the
benchmarks call it once per process; a malloc threshold variable (``USER_SETTINGS``) or a malloc
tunable in ``GLIBC_TUNABLES`` set by the user wins (nothing is changed then), and so does another
allocator preloaded in place of glibc's (its ``mallopt``, if any, is not called).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES  # the dynamic rule's ratio

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_applied: bool | None = None  # None: not asked yet in this process


def _preloaded_allocator() -> bool:
    preload = os.environ.get("LD_PRELOAD", "")
    return any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))


def steady_heap() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring); True when
    they were set (now or by an earlier call), False where the allocator is not glibc's or the user
    configured it."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or _preloaded_allocator():
        return False
    if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting either threshold also stops the dynamic adjustment
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _applied
