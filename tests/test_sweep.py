"""The main job end to end on a real local Ray: YAML spec -> trials -> Parquet -> SQLite MLflow."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
import yaml
from rich.console import Console

from sweep.cli import main
from sweep.driver import run_sweep
from sweep.plan import make_plan
from sweep.spec import validate

METRICS = ["instance_seed", "top1", "top5", "loss", "count"]
KEY = ["point_id", "instance", "mitigation"]


def spec_raw(out, ckpt, workers=2, instances=4, hardware=None, gmin=(0.0, 0.1), **extra) -> dict:
    raw = {
        "name": "t",
        "seed": 3,
        "model": {"name": "lenet5", "checkpoint": ckpt},
        "data": {"name": "digits", "eval_size": 200, "calibration_size": 256},
        "hardware": hardware
        if hardware is not None
        else {
            "read_noise": {"enabled": True},
            "frequency_hz": 1e9,
            "rtn": {"enabled": True},
            "variation": {"sigma_rel": 0.05},
            "faults": {"stuck_at_gmax_rate": 0.01},
        },
        "mitigations": ["none", "ec"],
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": list(gmin)}},
        "trials": instances,
        "execution": {"workers": workers, "batch_size": 100, "trials_per_task": 1},
        "output": {"dir": str(out), "flush_rows": 4},
    }
    raw.update(extra)
    return raw


def run(raw, **kw):
    return run_sweep(validate(raw), raw, console=Console(file=io.StringIO()), **kw)


def table(out):
    return ds.dataset(os.path.join(out, "rows")).to_table().to_pandas().sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, lenet_checkpoint, tmp_path_factory):
    ray_cluster.ensure()
    out = tmp_path_factory.mktemp("sweep2")
    raw = spec_raw(out, lenet_checkpoint[0], workers=2)
    outcome = run(raw)
    return raw, out, outcome


def test_rows_equal_the_plan_every_key_exactly_once(two_worker_run):
    raw, out, outcome = two_worker_run
    plan = outcome.plan  # its point ids hash the trained weights too
    assert plan.keys() != make_plan(validate(raw), raw).keys()  # (ids from the spec alone differ)
    df = table(out)
    assert outcome.complete and len(df) == plan.rows_total == 2 * 4 * 2
    keys = set(map(tuple, df[KEY].itertuples(index=False)))
    assert len(keys) == len(df) and keys == plan.keys()
    assert df["hardware.faults.stuck_at_gmin_rate"].dtype == "float64" and set(df["count"]) == {200}
    assert (df["t_evaluate_s"] > 0).all() and df["worker_pid"].nunique() == 2  # both actors worked
    assert set(df["sweep_id"]) == {plan.sweep_id} and set(df["spec_hash"]) == {plan.spec_hash}
    # paired by construction: both mitigations of a trial saw the same instance
    assert (df.groupby(["point_id", "instance"])["instance_seed"].nunique() == 1).all()
    faulty = df[df["hardware.faults.stuck_at_gmin_rate"] > 0]
    assert faulty[faulty.mitigation == "ec"].top1.mean() > faulty[faulty.mitigation == "none"].top1.mean()


def test_one_worker_gives_the_same_table_as_two(two_worker_run, lenet_checkpoint, tmp_path):
    raw2, out2, _ = two_worker_run
    run(spec_raw(tmp_path, lenet_checkpoint[0], workers=1))
    a, b = table(out2), table(tmp_path)
    assert a[KEY].equals(b[KEY])
    for col in METRICS:  # bitwise, read noise included
        assert a[col].equals(b[col]), col


def test_mlflow_parent_and_child_runs_in_sqlite(two_worker_run):
    from mlflow.tracking import MlflowClient

    raw, out, outcome = two_worker_run
    assert outcome.mlflow_logged
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("xbar.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("xbar.kind") == "point"]
    assert len(parents) == 1 and len(children) == 2 * 2
    parent = parents[0]
    assert parent.data.params["hardware.faults.stuck_at_gmax_rate"] == "0.01"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["spec.yaml"]
    df = table(out)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        m = child.data.metrics
        assert {"top1_n", "top1_mean", "top1_std", "top1_min", "top1_p5", "top1_median", "top1_p95"} <= set(m)
        sel = df[
            (df.point_id == child.data.tags["xbar.point_id"]) & (df.mitigation == child.data.tags["xbar.mitigation"])
        ]
        assert m["top1_n"] == len(sel) == 4 and m["top1_mean"] == pytest.approx(sel.top1.mean())
        assert m["top1_min"] == pytest.approx(sel.top1.min())


def test_rerun_is_a_no_op_and_changed_spec_needs_force(two_worker_run, capsys):
    raw, out, _ = two_worker_run
    again = run(raw)
    assert again.complete and again.rows_written == 0
    changed = spec_raw(out, raw["model"]["checkpoint"], gmin=(0.0, 0.1, 0.2))
    path = os.path.join(out, "changed.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(changed, f)
    before = sorted(os.listdir(os.path.join(out, "rows")))
    assert main(["run", path]) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(os.listdir(os.path.join(out, "rows"))) == before  # nothing touched
    forced = run(changed, force=True)
    assert forced.complete and forced.rows_written == 4 * 2  # only the new point was computed


def test_interrupted_run_resumes_to_the_uninterrupted_table(ray_cluster, lenet_checkpoint, tmp_path):
    """SIGKILL the driver process mid-sweep, rerun the same command: complete, no duplicates,
    the same metrics as a run that was never interrupted."""
    ckpt = lenet_checkpoint[0]
    light = {"faults": {"stuck_at_gmax_rate": 0.01}}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    raw = spec_raw(killed_dir, ckpt, instances=60, hardware=light)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.ensure(), RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "run", str(spec_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rows_dir = killed_dir / "rows"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        rows_dir.exists() and any(p.name.startswith("part-") for p in rows_dir.iterdir())
    ):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(ds.dataset(str(rows_dir)).to_table())
    plan = make_plan(validate(raw), raw)
    assert 0 < partial < plan.rows_total, "the kill must land mid-sweep"
    assert main(["run", str(spec_path)]) == 0  # the same command again
    run(spec_raw(clean_dir, ckpt, instances=60, hardware=light))
    a, b = table(killed_dir), table(clean_dir)
    assert len(a) == plan.rows_total and not a.duplicated(KEY).any()
    assert a[KEY].equals(b[KEY])
    for col in METRICS:
        assert a[col].equals(b[col]), col


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: r.update(nonsense=1), "nonsense"),
        (lambda r: r["execution"].update(workers="two"), "execution.workers"),
        (lambda r: r["hardware"].update(faults={"stuck_at_gmax_rate": 1.5}), "hardware.faults.stuck_at_gmax_rate"),
        (lambda r: r["sweep"]["grid"].update({"hardware.faults.stuck_at_gmin_rate": [0.0, 2.0]}), "stuck_at_gmin_rate"),
        (lambda r: r["sweep"]["grid"].update({"hardware.frequency_hz": []}), "hardware.frequency_hz"),
        (lambda r: r["model"].update(checkpoint="/nonexistent/model.pt"), "model.checkpoint"),
    ],
)
def test_malformed_specs_exit_2_name_the_field_and_write_nothing(edit, needle, tmp_path, capsys, lenet_checkpoint):
    out = tmp_path / "out"
    raw = spec_raw(out, lenet_checkpoint[0])
    edit(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    for cmd in ("validate", "run"):
        assert main([cmd, str(path)]) == 2
        err = capsys.readouterr().err
        assert needle in err, err
    assert not out.exists()


def test_validate_prints_the_plan(tmp_path, capsys, lenet_checkpoint):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(spec_raw(tmp_path / "out", lenet_checkpoint[0])))
    assert main(["validate", str(path), "--set", "trials=7"]) == 0
    assert "2 points (1 swept parameter) x 7 instances x 2 mitigations = 28 rows" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_offline_variants_are_trained_once_cached_and_shipped(ray_cluster, lenet_checkpoint, tmp_path):
    """An L1-trained variant (si) is produced by the driver once, cached by content hash and
    shipped to the workers; a derived variant (fpt's inserted BN) is built on the worker."""
    ray_cluster.ensure()
    raw = spec_raw(tmp_path, lenet_checkpoint[0], instances=2, hardware={"faults": {"stuck_at_gmax_rate": 0.02}})
    raw["mitigations"] = ["none", {"name": "si", "l1": 3e-4, "epochs": 2}, "fpt"]
    first = run(raw)
    assert first.complete and first.rows_total == 2 * 2 * 3
    variants = [f for f in os.listdir(tmp_path / "models") if f.startswith("variant-si-")]
    assert len(variants) == 1
    stamp = os.path.getmtime(tmp_path / "models" / variants[0])
    raw["trials"] = 3  # more instances: the cached variant is reused, not retrained
    again = run(raw, force=True)
    assert again.complete and again.rows_written == 2 * 1 * 3
    assert os.path.getmtime(tmp_path / "models" / variants[0]) == stamp
    df = table(tmp_path)
    assert set(df.mitigation) == {"none", "si(epochs=2,l1=0.0003)", "fpt(batch_size=32,batches=32,momentum=0.1)"}
    assert (df.groupby(["point_id", "instance"])["instance_seed"].nunique() == 1).all()


def test_report_is_logged_to_the_sweeps_parent_run(two_worker_run):
    from mlflow.tracking import MlflowClient

    raw, out, _ = two_worker_run
    assert main(["report", str(out), "--mlflow"]) == 0
    assert os.path.isfile(os.path.join(out, "report", "report.html"))
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("t")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("xbar.kind") == "sweep")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/summary.csv", "report/accuracy_vs_stuck_at_gmin_rate.png"} <= logged
