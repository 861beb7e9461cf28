"""``python -m benchmarks.cli``: whole-process start-up of the command line (issue 15 goals:
``xbar-sweep --help`` <= 1 s, ``xbar-sweep validate examples/quickstart.yaml`` <= 3 s), medians of
repeats, each a fresh process. Heavy imports (torch, Ray, MLflow) happen only after the arguments
are parsed and only for the commands that need them."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from rich.console import Console

from .common import write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "help_s": ["--help"],
    "validate_quickstart_s": ["validate", "examples/quickstart.yaml"],
    "validate_preflight_quickstart_s": ["validate", "--preflight", "examples/quickstart.yaml"],
}


def main(repeats: int = 5) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "xbar-sweep")
    results = {}
    for name, args in CASES.items():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([exe, *args], cwd=REPO, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        results[name] = statistics.median(times)
    path = write(
        "cli", {"goals": {"help_s": 1.0, "validate_quickstart_s": 3.0}, "repeats": repeats, "results": results}
    )
    Console().print({k: round(v, 3) for k, v in results.items()}, f"-> {path}")


if __name__ == "__main__":
    main()
