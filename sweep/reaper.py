"""Ends what a locally started Ray leaves behind when its driver dies without cleaning up.

``ray.init``'s GCS, raylet and workers share the driver's fate, but the raylet's dashboard and
runtime-env agents do not: SIGKILL the driver (or have it OOM-killed) and they stay for minutes.
The driver starts this watcher right after it starts Ray (:func:`start`): a detached process that
polls the driver and remembers its Ray descendants while it lives; once the driver is gone it
terminates them (SIGTERM, then SIGKILL after a grace period). A remembered process is only touched
if its create time still matches, so a reused pid is never signalled. A clean exit has already
shut Ray down, and the watcher then finds nothing left to end.

Run as ``python -m sweep.reaper PID``; it imports nothing but psutil.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil


def _is_ray(proc: psutil.Process) -> bool:
    try:
        return "ray" in " ".join(proc.cmdline()).lower() or "ray" in proc.name().lower()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def watch(pid: int, interval_s: float = 0.5, grace_s: float = 5.0) -> int:
    """Block until process ``pid`` exits, then end its remembered Ray descendants; returns how many."""
    try:
        driver = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    known: dict[int, float] = {}
    me = os.getpid()
    while True:
        try:
            for child in driver.children(recursive=True):
                if child.pid != me and child.pid not in known and _is_ray(child):
                    known[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            break
        if not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(interval_s)
    left = []
    for child_pid, created in known.items():
        try:
            proc = psutil.Process(child_pid)
            if proc.create_time() == created:
                proc.terminate()
                left.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(left, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return len(left)


def start(pid: int | None = None) -> subprocess.Popen:
    """Start the watcher for ``pid`` (default: this process), detached from its session and signals."""
    return subprocess.Popen(
        [sys.executable, "-m", "sweep.reaper", str(os.getpid() if pid is None else pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


if __name__ == "__main__":  # pragma: no cover - exercised by tests/test_reliability.py as a real process
    watch(int(sys.argv[1]))
