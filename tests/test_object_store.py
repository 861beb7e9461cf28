"""Results on an S3-compatible object store (issue 17), against a real HTTP S3 endpoint: a moto
server process on 127.0.0.1 with a random port. Endpoint and credentials come from the standard
AWS_* variables, exactly as the README's "Running on a cluster" section sets them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import free_port

from analysis.load import load_frame
from sweep.cli import main

BIN = os.path.dirname(sys.executable)
BUCKET = "xbar-results"
KEY = ["point_id", "instance", "mitigation"]


@pytest.fixture(scope="module")
def s3_env():
    port = free_port()
    server = subprocess.Popen(
        [f"{BIN}/moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ACCESS_KEY_ID": "xbar",
        "AWS_SECRET_ACCESS_KEY": "xbar-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2)
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the moto S3 server did not start")
            time.sleep(0.3)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(timeout=30)


def _spec(tmp_path, out: str, ckpt: str, **output) -> str:
    raw = {
        "name": "s3",
        "seed": 5,
        "model": {"name": "lenet5", "checkpoint": ckpt},
        "data": {"name": "digits", "eval_size": 360, "calibration_size": 256},
        "hardware": {"faults": {"stuck_at_gmax_rate": 0.01}, "read_noise": {"enabled": True}},
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.02, 0.08]}},
        "mitigations": ["none", "ec"],
        "trials": 20,
        "execution": {"workers": 1, "batch_size": 360, "trials_per_task": 1},
        "output": {
            "dir": out,
            "flush_rows": 2,
            "flush_seconds": 0.2,
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
            **output,
        },
    }
    path = tmp_path / f"spec-{abs(hash(out)) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _cli(*args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, the AWS_* variables
    return subprocess.Popen(
        [f"{BIN}/xbar-sweep", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _objects(fs, prefix: str) -> list[pafs.FileInfo]:
    return [
        i
        for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        if i.type == pafs.FileType.File
    ]


def test_a_sweep_on_s3_killed_and_resumed_equals_a_local_run(s3_env, lenet_checkpoint, tmp_path, ray_cluster):
    """Kill the driver mid-sweep (SIGKILL), resume, and compare with a local run of the same spec:
    every planned key exactly once, the same values; while it runs, every object visible under rows/
    is a complete Parquet file and no temporary object ever appears; report, check and
    analysis.load read straight from the URI. Catches temp-then-move on S3 (a visible _tmp object, a
    copy that is not atomic), a lease that a dead driver's rerun cannot take over, and a resume that
    recomputes or loses rows on an object store."""
    uri = f"s3://{BUCKET}/sweep-{os.getpid()}"
    fs, root = pafs.FileSystem.from_uri(uri)
    spec = _spec(tmp_path, uri, lenet_checkpoint[0])
    proc = _cli("run", spec)
    seen, deadline = set(), time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        for info in _objects(fs, f"{root}/rows"):
            name = info.base_name
            assert not name.startswith(("_", ".")), f"temporary object visible under rows/: {name}"
            if name not in seen:
                with fs.open_input_file(info.path) as f:  # complete from the moment it is listed
                    assert pq.read_metadata(f).num_rows >= 1
                seen.add(name)
        if len(seen) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(seen) >= 2, "the sweep must be mid-way when it is killed"
    proc.kill()
    proc.wait(timeout=30)
    rerun = _cli("run", spec)
    printed, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and "taking over a stale lease" in printed, (printed + err)[-3000:]
    assert main(["check", uri]) == 0

    ray_cluster.ensure()
    local = tmp_path / "local"
    assert main(["run", _spec(tmp_path, str(local), lenet_checkpoint[0])]) == 0
    remote, here = load_frame(uri), load_frame(str(local))
    assert len(remote) == 2 * 20 * 2 and not remote.duplicated(KEY).any()
    cols = KEY + ["top1", "top5", "loss"]
    assert (
        remote[cols].sort_values(KEY).reset_index(drop=True).equals(here[cols].sort_values(KEY).reset_index(drop=True))
    )
    report = tmp_path / "report"
    assert main(["report", uri, "--out", str(report)]) == 0 and (report / "report.html").exists()
    assert not [i for i in _objects(fs, root) if i.base_name.startswith("_tmp")]


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "mlflow left at sqlite"])
def test_object_store_misconfiguration_is_refused_before_any_trial(
    s3_env, lenet_checkpoint, tmp_path, capsys, monkeypatch, case
):
    """Exit 2 with one message naming the setting to change, and nothing written to the store."""
    uri, output, needle = f"s3://{BUCKET}/refused-{os.getpid()}", {}, ""
    if case == "missing bucket":
        uri, needle = "s3://no-such-bucket/sweep", "output.dir: bucket 'no-such-bucket' does not exist"
    elif case == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        needle = "set AWS_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    else:
        output = {"mlflow": {"tracking_uri": None}}
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        needle = "output.mlflow.tracking_uri: MLflow's default SQLite store cannot live on"
    spec = _spec(tmp_path, uri, lenet_checkpoint[0], **output)
    start = time.time()
    assert main(["run", spec]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("error:") == 1, err
    assert time.time() - start < 60
    fs = pafs.S3FileSystem(endpoint_override=s3_env["AWS_ENDPOINT_URL"])  # the live server, whatever the case set
    assert not _objects(fs, f"{BUCKET}/refused-{os.getpid()}")


def test_the_s3_lease_is_atomic_one_of_many_concurrent_runs_holds_it(s3_env):
    """Eight drivers start on one S3 output at once: exactly one gets the lease (a conditional
    create, If-None-Match), the others are refused naming the holder; a stale lease is swapped by
    compare-and-swap (If-Match) for exactly one of several contenders. The create itself is checked
    against the live holder: a contender that saw no lease a moment earlier still cannot overwrite it
    (under write-then-read-back, two writes half a second apart both "hold" the lease)."""
    import threading

    from sweep.errors import SpecError
    from sweep.lease import OutputLease, _ConditionalS3
    from sweep.results import ResultStore

    uri = f"s3://{BUCKET}/lease-{os.getpid()}"
    barrier, held, refused = threading.Barrier(8), [], []

    def contend() -> None:
        lease = OutputLease(ResultStore(uri))
        assert not lease.warnings  # conditional writes are available: no best-effort warning
        barrier.wait()
        try:
            held.append(lease.acquire())
        except SpecError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 1 and len(refused) == 7 and all("is in use by another xbar-sweep run" in r for r in refused)
    winner = held[0]
    late = _ConditionalS3(f"{BUCKET}/lease-{os.getpid()}")
    before = ResultStore(uri).read_bytes(".lease")
    assert not late.create(b"{}") and ResultStore(uri).read_bytes(".lease") == before
    winner._stop.set()  # the holder "dies": no more heartbeats, and its pid is made to look dead
    winner._thread.join()
    record = json.loads(ResultStore(uri).read_bytes(".lease"))
    record["pid"] = 2**22 + 12345  # not a live pid on this host
    fs = pafs.S3FileSystem(endpoint_override=s3_env["AWS_ENDPOINT_URL"])
    with fs.open_output_stream(f"{BUCKET}/lease-{os.getpid()}/.lease") as f:
        f.write(json.dumps(record).encode())
    held.clear(), refused.clear()
    barrier.reset()
    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 1 and len(refused) == 7, (len(held), refused[:2])
    assert any("taking over a stale lease" in w for w in held[0].warnings)
    held[0].release()
    assert not ResultStore(uri).exists(".lease")
