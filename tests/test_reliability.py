"""Reliability and first use (issue 15), with real processes: one writer per output, every spec
error before any work, integrity on resume, point ids that hash the trained weights, clean stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
import torch
import yaml

from sweep.cli import main

BIN = os.path.dirname(sys.executable)
KEY = ["point_id", "instance", "mitigation"]


def _spec(tmp_path, out, ckpt=None, **extra) -> str:
    raw = {
        "name": "rel",
        "seed": 3,
        "model": {"name": "lenet5", "checkpoint": ckpt} if ckpt else {"name": "lenet5", "train": {"epochs": 1}},
        "data": {"name": "digits", "eval_size": 100, "calibration_size": 256},
        "hardware": {"faults": {"stuck_at_gmax_rate": 0.01}},
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.02, 0.08]}},
        "mitigations": ["none"],
        "trials": 6,
        "execution": {"workers": 1, "batch_size": 100, "trials_per_task": 1},
        "output": {"dir": str(out), "flush_rows": 2, "flush_seconds": 0.2},
    }
    for k, v in extra.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    path = tmp_path / f"spec-{abs(hash(str(out))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _cli(*args, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each run starts its own local Ray
    return subprocess.Popen(
        [f"{BIN}/xbar-sweep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw
    )


def _rows(out) -> list:
    t = ds.dataset(os.path.join(out, "rows")).to_table().to_pandas()
    return sorted(map(tuple, t[KEY].itertuples(index=False)))


# one writer per output -----------------------------------------------------------------------------
def test_two_runs_on_one_output_one_proceeds_and_the_other_exits_2(lenet_checkpoint, tmp_path):
    """Started together: exactly one holds the output's lease; the other is refused at once, naming
    the holder, before Ray or MLflow start (no alembic race, no row computed twice)."""
    out = tmp_path / "out"
    spec = _spec(tmp_path, out, lenet_checkpoint[0])
    a, b = _cli("run", spec), _cli("run", spec)
    results = [(p.wait(timeout=600), *p.communicate()) for p in (a, b)]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [r[2][-2000:] for r in results]
    loser = next(r for r in results if r[0] == 2)
    assert "is in use by another xbar-sweep run" in loser[2] and "pid" in loser[2] and "Traceback" not in loser[2]
    winner = next(r for r in results if r[0] == 0)
    assert "Token authentication is enabled" not in winner[1] + winner[2]  # local Ray: loopback, no token noise
    rows = _rows(out)
    assert len(rows) == len(set(rows)) == 2 * 6
    assert main(["check", str(out)]) == 0
    assert not (out / ".lease").exists()


def test_a_stale_lease_of_a_dead_process_is_taken_over_with_a_warning(lenet_checkpoint, tmp_path, capsys, ray_cluster):
    ray_cluster.ensure()
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    lease = {
        "owner": "x",
        "host": socket.gethostname(),
        "pid": dead.pid,
        "started": time.time(),
        "heartbeat": time.time(),
        "token": "old",
    }
    (out / ".lease").write_text(json.dumps(lease))
    assert main(["run", _spec(tmp_path, out, lenet_checkpoint[0])]) == 0
    assert "taking over a stale lease" in capsys.readouterr().out
    assert not (out / ".lease").exists()


# every spec error before any work ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, needle",
    [
        ("execution.gpus_per_worker=1", "execution.gpus_per_worker: 1 GPU per worker, but no node has more than 0"),
        ("execution.cpus_per_worker=64", "execution.cpus_per_worker: 64 CPU per worker"),
        ("execution.workers=5", "execution.workers: 5 workers x 1 CPU"),
    ],
)
def test_resources_the_machine_cannot_provide_exit_2_in_seconds(lenet_checkpoint, tmp_path, capsys, override, needle):
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(["run", _spec(tmp_path, out, lenet_checkpoint[0]), "--set", override]) == 2
    assert time.monotonic() - start < 30 and needle in capsys.readouterr().err
    assert not out.exists()


def _garbage(tmp_path) -> str:
    path = tmp_path / "not-a-model.pt"
    path.write_bytes(b"this is not a torch file")
    return str(path)


PREFLIGHT = [
    (
        "mnist root without its files",
        lambda tp, ck: ["--set", "data.name=mnist", "--set", f"data.root={tp}"],
        "data.root: mnist files not found",
    ),
    (
        "a checkpoint that is not a torch file",
        lambda tp, ck: ["--set", f"model.checkpoint={_garbage(tp)}"],
        "model.checkpoint",
    ),
    (
        "model.name other than the checkpoint's",
        lambda tp, ck: ["--set", "model.name=mlp"],
        "model.name: 'mlp', but the checkpoint",
    ),
    ("output.dir is a file", lambda tp, ck: ["--set", f"output.dir={ck}"], "is a file, not a directory"),
    ("output.dir under a file", lambda tp, ck: ["--set", f"output.dir={ck}/sub"], "which is a file"),
    ("output.dir a bad URI", lambda tp, ck: ["--set", "output.dir=nosuchscheme://bucket/x"], "output.dir:"),
    (
        "an infinite weight decay",
        lambda tp, ck: ["--set", "model.checkpoint=null", "--set", "model.train={weight_decay: .inf}"],
        "model.train.weight_decay: Input should be a finite number",
    ),
    (
        "a NaN fault rate",
        lambda tp, ck: ["--set", "hardware.faults.stuck_at_gmax_rate=.nan"],
        "hardware.faults.stuck_at_gmax_rate: Input should be a finite number",
    ),
    (
        "an override that is not YAML",
        lambda tp, ck: ["--set", "trials=[1, 2"],
        "--set trials: the value '[1, 2' is not valid YAML",
    ),
]


@pytest.mark.parametrize("case, args, needle", PREFLIGHT, ids=[c[0] for c in PREFLIGHT])
def test_preflight_refuses_with_one_message_naming_the_field_and_writes_nothing(
    lenet_checkpoint, tmp_path, capsys, case, args, needle
):
    out = tmp_path / "out"
    ckpt = lenet_checkpoint[0]
    stamp = os.stat(ckpt)
    code = main(["run", _spec(tmp_path, out, ckpt), *args(tmp_path, ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert "Traceback" not in err and err.count("error:") == 1 and len(err.strip().splitlines()) == 1
    assert not out.exists() and os.stat(ckpt).st_mtime == stamp.st_mtime and not os.path.exists(f"{ckpt}/sub")


def test_a_read_only_output_parent_is_refused_even_for_root(lenet_checkpoint, tmp_path, capsys):
    """Tests run as root, for whom permission bits never refuse a write; an immutable directory
    (chattr +i) does, as a read-only mount would. Catches an os.access-only check (root passes it)."""
    parent = tmp_path / "ro"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        code = main(["run", _spec(tmp_path, parent / "out", lenet_checkpoint[0])])
        err = capsys.readouterr().err
        assert code == 2 and "output.dir:" in err and "is not writable" in err, err
        assert not (parent / "out").exists() and not list(parent.iterdir())
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)


# integrity on resume -------------------------------------------------------------------------------
def test_a_truncated_part_file_is_moved_aside_and_its_rows_recomputed(lenet_checkpoint, tmp_path, capsys, ray_cluster):
    ray_cluster.ensure()
    out = tmp_path / "out"
    spec = _spec(tmp_path, out, lenet_checkpoint[0])
    assert main(["run", spec]) == 0
    reference = ds.dataset(str(out / "rows")).to_table().to_pandas().sort_values(KEY).reset_index(drop=True)
    part = sorted((out / "rows").glob("part-*.parquet"))[0]
    data = part.read_bytes()
    part.write_bytes(
        data[: len(data) // 2]
    )  # a half-written file, as a crash on a filesystem without rename might leave
    assert main(["check", str(out), "--no-mlflow"]) == 1
    assert main(["run", spec]) == 0
    assert f"part file {part.name} is unreadable" in capsys.readouterr().out
    assert (out / "rows" / "_corrupt" / part.name).read_bytes() == data[: len(data) // 2]  # moved, never deleted
    again = ds.dataset(str(out / "rows")).to_table().to_pandas().sort_values(KEY).reset_index(drop=True)
    assert again[KEY].equals(reference[KEY]) and again["top1"].equals(reference["top1"])
    assert main(["check", str(out)]) == 0
    next((out / "rows").glob("part-*.parquet")).unlink()  # lose rows: check lists what is missing
    capsys.readouterr()
    assert main(["check", str(out), "--no-mlflow"]) == 1
    assert "planned keys are missing" in capsys.readouterr().err


# point ids hash the trained weights ------------------------------------------------------------------
def test_training_is_deterministic_and_point_ids_hash_the_trained_weights(tmp_path, capsys, ray_cluster):
    """The same recipe trained twice gives the same weights (fixed threads, deterministic
    algorithms); a model with other weights under the same recipe gives other point ids, so its
    rows are never mixed with the old ones. Breakage caught: ids hashing only the recipe."""
    from engine.train import checkpoint_digest
    from sweep.preparation import train_base

    model = {
        "name": "lenet5",
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0, "l1": 0.0, "seed": 0},
    }
    data = {"name": "digits", "root": None, "input_size": None}
    first, second = train_base(model, data, 1), train_base(model, data, 1)
    assert checkpoint_digest(first[0]) == checkpoint_digest(second[0])

    ray_cluster.ensure()
    out = tmp_path / "out"
    spec = _spec(tmp_path, out)  # a recipe: trained by the sweep, cached under models/
    assert main(["run", spec]) == 0
    ids = {r[0] for r in _rows(out)}
    cached = next((out / "models").glob("lenet5-*.pt"))
    ckpt = torch.load(cached, weights_only=True)
    ckpt["state_dict"]["classifier.1.weight"] += (
        1e-3  # other weights, same recipe (as another torch or machine might give)
    )
    torch.save(ckpt, cached)
    capsys.readouterr()
    assert main(["run", spec]) == 2
    assert "other trained weights" in capsys.readouterr().err
    assert main(["run", spec, "--force"]) == 0
    new_ids = {r[0] for r in _rows(out)} - ids
    assert len(new_ids) == 2 and not new_ids & ids  # every point recomputed under a new id


# clean stops -------------------------------------------------------------------------------------------
def _sweep_with_first_rows(tmp_path, ckpt: str):
    """A CLI sweep (its own local Ray) that has written its first part file and is still running."""
    out = tmp_path / "out"
    spec = _spec(
        tmp_path,
        out,
        ckpt,
        trials=40,
        data={"eval_size": 360},
        hardware={"faults": {"stuck_at_gmax_rate": 0.01}, "read_noise": {"enabled": True}},
    )
    proc = _cli("run", spec)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "rows").exists() and any((out / "rows").glob("part-*.parquet")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep must still be running when it is stopped"
    return proc, out, spec


def test_a_sigkilled_driver_leaves_no_ray_process_behind_and_a_rerun_completes(lenet_checkpoint, tmp_path):
    """SIGKILL gives the driver no chance to stop Ray; its dashboard and runtime-env agents used to stay
    for minutes. The watcher (sweep.reaper) ends every Ray process the driver started. Catches: the
    watcher missing, watching the wrong pid, or missing the raylet's agents (grandchildren)."""
    import psutil

    proc, out, spec = _sweep_with_first_rows(tmp_path, lenet_checkpoint[0])
    started = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "ray" in " ".join(p.cmdline()).lower() and "sweep.reaper" not in " ".join(p.cmdline())
    ]
    assert any("Agent" in " ".join(p.cmdline()) for p in started), [p.cmdline()[:2] for p in started]
    proc.kill()
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [p.cmdline()[:2] for p in alive]
    done = _cli("run", spec)  # the dead driver's lease is stale: taken over with a warning
    printed, err = done.communicate(timeout=600)
    assert done.returncode == 0 and "taking over a stale lease" in printed, (printed + err)[-3000:]
    assert main(["check", str(out)]) == 0
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_run_cleanly_and_a_rerun_completes(lenet_checkpoint, tmp_path, sig, code):
    from mlflow.tracking import MlflowClient

    proc, out, spec = _sweep_with_first_rows(tmp_path, lenet_checkpoint[0])
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    _, err = proc.communicate()
    assert rc == code, err[-3000:]
    assert "interrupted" in err and "rows kept, rerun to resume" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and not (out / ".lease").exists()
    parent = MlflowClient(f"sqlite:///{out}/mlflow.db").get_run(manifest["mlflow"]["parent_run_id"])
    assert parent.info.status == "KILLED"
    session = f"session_[0-9_-]*_{proc.pid}/"  # the local Ray the driver started names its session after it
    for _ in range(20):
        if subprocess.run(["pgrep", "-f", session], capture_output=True).returncode != 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("Ray processes started by the interrupted driver are still running")
    done = _cli("run", spec)
    assert done.wait(timeout=600) == 0, done.communicate()[1][-3000:]
    assert main(["check", str(out)]) == 0
    shutil.rmtree(out, ignore_errors=True)
