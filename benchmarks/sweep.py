"""``python -m benchmarks.sweep``: the sweep machinery on a local Ray.

* ``noop_trials_per_s``: trials that do nothing, through Ray actors, row composition and Parquet
  part files (default ``trials_per_task`` = 4, 2 workers), over the whole ``run_sweep`` call
  after Ray is up (goal >= 500).
* ``scaling_efficiency_2_workers``: real CPU-bound trials (digits LeNet-5, 8-bit ADC, 540 test
  images, 2 mitigations) with 1 and 2 workers of 1 CPU each; steady-state throughput (rows after
  the first 10 % of a run, from the rows' timestamps) of 2 workers over twice that of 1 worker
  (goal >= 0.9). The whole-run ratio, including actor start-up, is reported too.
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import pyarrow.dataset as ds
import ray
from rich.console import Console

from engine.train import TrainConfig, train_default
from sweep.driver import run_sweep
from sweep.spec import validate

from .common import write
from .noop_worker import NoopWorker


def _spec(out: str, ckpt: str, workers: int, instances: int, hardware: dict, mitigations: list) -> dict:
    return {
        "name": "bench",
        "seed": 1,
        "model": {"name": "lenet5", "checkpoint": ckpt},
        "data": {"name": "digits"},
        "hardware": hardware,
        "mitigations": mitigations,
        "trials": instances,
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.05, 0.1]}},
        "execution": {"workers": workers, "cpus_per_worker": 1, "batch_size": 540},
        "output": {"dir": out, "mlflow": {"enabled": False}},
    }


def _run(raw: dict, worker_cls=None) -> tuple[float, float]:
    t = time.perf_counter()
    run_sweep(validate(raw), raw, console=Console(file=io.StringIO()), worker_cls=worker_cls)
    wall = time.perf_counter() - t
    stamps = sorted(
        ds.dataset(os.path.join(raw["output"]["dir"], "rows"))
        .to_table(columns=["timestamp"])
        .column("timestamp")
        .to_pylist()
    )
    skip = len(stamps) // 10
    span = (stamps[-1] - stamps[skip]).total_seconds()
    return wall, (len(stamps) - 1 - skip) / span


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    tmp = tempfile.mkdtemp(prefix="xbar-bench-")
    ckpt = os.path.join(tmp, "lenet.pt")
    train_default(ckpt, cfg=TrainConfig(epochs=10))

    noop_n = 10_000
    raw = _spec(os.path.join(tmp, "noop"), ckpt, 2, noop_n // 2, {}, ["none"])
    wall_noop, _ = _run(raw, NoopWorker)
    noop_rate = noop_n / wall_noop

    real = {"faults": {"stuck_at_gmax_rate": 0.0175}}
    w1, r1 = _run(_spec(os.path.join(tmp, "w1"), ckpt, 1, 60, real, ["none", "ec"]))
    w2, r2 = _run(_spec(os.path.join(tmp, "w2"), ckpt, 2, 60, real, ["none", "ec"]))
    ray.shutdown()
    payload = {
        "goals": {"noop_trials_per_s": 500, "scaling_efficiency_2_workers": 0.9},
        "noop_trials": noop_n,
        "noop_wall_s": wall_noop,
        "noop_trials_per_s": noop_rate,
        "real_rows_per_run": 2 * 60 * 2,
        "one_worker": {"wall_s": w1, "steady_rows_per_s": r1},
        "two_workers": {"wall_s": w2, "steady_rows_per_s": r2},
        "scaling_efficiency_2_workers": r2 / (2 * r1),
        "scaling_efficiency_2_workers_whole_run": w1 / (2 * w2),
    }
    path = write("sweep", payload)
    Console().print(
        f"noop_trials_per_s {noop_rate:.0f} | scaling_efficiency_2_workers {r2 / (2 * r1):.2f} "
        f"(whole run incl. start-up {w1 / (2 * w2):.2f}) -> {path}"
    )


if __name__ == "__main__":
    main()
