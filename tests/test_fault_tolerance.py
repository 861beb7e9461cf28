"""Faults clusters have, caused for real: a worker actor SIGKILLed mid-sweep, an MLflow server
stopped mid-sweep. (A SIGKILLed driver is covered in test_sweep.py and test_clusters.py.)"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pyarrow.dataset as ds
from conftest import free_port
from rich.console import Console

from sweep.cli import main
from sweep.driver import run_sweep
from sweep.spec import validate

KEY = ["point_id", "instance", "mitigation"]
BIN = os.path.dirname(sys.executable)


def _raw(out, ckpt, instances=30, **output) -> dict:
    return {
        "name": "ft",
        "seed": 11,
        "model": {"name": "lenet5", "checkpoint": ckpt},
        "data": {"name": "digits", "eval_size": 200, "calibration_size": 256},
        "hardware": {"faults": {"stuck_at_gmax_rate": 0.01}, "variation": {"sigma_rel": 0.05}},
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.0, 0.05]}},
        "mitigations": ["none", "ec"],
        "trials": instances,
        "execution": {"workers": 2, "batch_size": 200, "trials_per_task": 1, "max_task_failures": 3},
        "output": {"dir": str(out), "flush_rows": 4, **output},
    }


def _run(raw):
    return run_sweep(validate(raw), raw, console=Console(file=io.StringIO()))


def _table(out):
    return ds.dataset(os.path.join(out, "rows")).to_table().to_pandas().sort_values(KEY).reset_index(drop=True)


def _when_rows_exist(out, action) -> threading.Thread:
    def watch():
        rows = os.path.join(out, "rows")
        deadline = time.time() + 300
        while time.time() < deadline:
            if os.path.isdir(rows) and any(n.startswith("part-") for n in os.listdir(rows)):
                action()
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_sigkill_of_a_worker_actor_mid_sweep_still_gives_every_row_exactly_once(
    ray_cluster, lenet_checkpoint, tmp_path
):
    ray_cluster.ensure()
    killed = []

    def kill_a_worker():
        pids = subprocess.run(["pgrep", "-f", "ray::TrialWorker"], capture_output=True, text=True).stdout.split()
        if pids:
            os.kill(int(pids[0]), signal.SIGKILL)
            killed.append(int(pids[0]))

    watcher = _when_rows_exist(tmp_path / "killed", kill_a_worker)
    out = _run(_raw(tmp_path / "killed", lenet_checkpoint[0]))
    watcher.join(timeout=5)
    assert killed, "a worker process must have been killed mid-sweep"
    assert out.complete and out.rows_present == out.rows_total == 2 * 30 * 2
    a = _table(tmp_path / "killed")
    assert not a.duplicated(KEY).any()
    assert killed[0] not in set(a.worker_pid[a.timestamp == a.timestamp.max()])  # a restarted process finished the work
    _run(_raw(tmp_path / "clean", lenet_checkpoint[0]))
    b = _table(tmp_path / "clean")
    for col in ["instance_seed", "top1", "top5", "loss", "count"]:  # re-run trials give the same rows
        assert a[col].equals(b[col]), col


def _mlflow_server(port: int, db: str, artifacts: str) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen(
        [
            f"{BIN}/mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            artifacts,
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_mlflow_server_stopped_mid_sweep_then_synced_when_back(ray_cluster, lenet_checkpoint, tmp_path):
    from mlflow.tracking import MlflowClient

    ray_cluster.ensure()
    port = free_port()
    db, art = str(tmp_path / "mlflow.db"), str(tmp_path / "artifacts")
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(port, db, art)
    try:
        out_dir = tmp_path / "out"
        raw = _raw(out_dir, lenet_checkpoint[0], instances=15, mlflow={"tracking_uri": uri, "experiment": "ft"})
        watcher = _when_rows_exist(out_dir, lambda: _stop(server))
        outcome = _run(raw)
        watcher.join(timeout=5)
        assert server.poll() is not None, "the server must have been stopped mid-sweep"
        assert outcome.complete and not outcome.mlflow_logged
        assert any("MLflow" in w and "mlflow-sync" in w for w in outcome.warnings)
        server = _mlflow_server(port, db, art)  # back, with the same store
        assert main(["mlflow-sync", str(out_dir)]) == 0
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("ft").experiment_id])
        parents = [r for r in runs if r.data.tags.get("xbar.kind") == "sweep"]
        children = [r for r in runs if r.data.tags.get("xbar.kind") == "point"]
        assert len(parents) == 1 and parents[0].data.tags["xbar.status"] == "complete"
        assert len(children) == 2 * 2 and all(c.data.metrics["top1_n"] == 15 for c in children)
        assert main(["mlflow-sync", str(out_dir)]) == 0  # idempotent: nothing duplicated
        assert len(client.search_runs([client.get_experiment_by_name("ft").experiment_id])) == 1 + 4
    finally:
        if server.poll() is None:
            _stop(server)
