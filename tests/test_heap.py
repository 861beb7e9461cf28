"""engine.heap: fixed glibc heap thresholds keep a trial's pages instead of faulting them in again.

Each check runs in a fresh interpreter, since the thresholds are process-wide and move with the
process's history; the fault counts are the kernel's own (getrusage minor faults)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import engine.heap as heap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc thresholds"
)

_CYCLES = """
import ctypes, json, resource, sys
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "steady":
    from engine.heap import steady_heap
    assert steady_heap()
elif sys.argv[1] == "worker":  # what a sweep's Ray actor constructs
    import yaml
    from sweep.worker import TrialWorker
    TrialWorker(yaml.safe_load(open("examples/quickstart.yaml")), 1.0, 0.0)
def touched(n):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touched(8 << 20))  # a freed mapped block: glibc's dynamic thresholds become 8 MiB / 16 MiB
faults = []
for _ in range(5):  # a pass that frees 21 MiB of heap at once, as a forward frees its activations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [touched(7 << 20) for _ in range(3)]
    for p in blocks:
        libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _run(script: str, mode: str):
    env = {**os.environ, "PYTHONPATH": ROOT}
    for name in (*heap.USER_SETTINGS, "GLIBC_TUNABLES", "LD_PRELOAD"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fixed_thresholds_keep_the_freed_top_of_the_heap():
    """glibc's documented dynamic rule: after an 8 MiB mapped block is freed the heap is trimmed
    whenever more than 16 MiB is free at its top, so every 21 MiB pass faults its ~5,400 pages in
    again; with the thresholds fixed (32 MiB / 64 MiB) only the first pass does, and a sweep's trial
    worker fixes them when it starts."""
    pages = 3 * (7 << 20) // os.sysconf("SC_PAGE_SIZE")
    moving = _run(_CYCLES, "default")
    assert min(moving[1:]) > pages // 2, moving
    for mode in ("steady", "worker"):
        faults = _run(_CYCLES, mode)
        assert max(faults[1:]) < 64, (mode, faults)


def test_a_user_setting_wins(monkeypatch):
    monkeypatch.setattr(heap, "_applied", None)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert heap.steady_heap() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    assert heap.steady_heap() is False  # asked once per process: the answer is kept
