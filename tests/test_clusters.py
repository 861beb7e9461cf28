"""Deploy files and `ray job submit` on a real `ray start --head` bound to 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds
import pytest
import yaml
from conftest import free_port

from sweep.plan import make_plan
from sweep.spec import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SCRIPTS = sorted(
    glob.glob(f"{REPO}/clusters/**/*.sh", recursive=True) + glob.glob(f"{REPO}/clusters/**/*.sbatch", recursive=True)
)
KEY = ["point_id", "instance", "mitigation"]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_parse_and_pass_shellcheck(script):
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    res = subprocess.run([os.path.join(BIN, "shellcheck"), "-x", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec["template"]["spec"]["containers"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_have_the_required_fields(name):
    with open(f"{REPO}/clusters/k8s/{name}") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    assert len(docs) == 1
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        assert "xbar-sweep run" in spec["entrypoint"] and "output.dir=" in spec["entrypoint"]
        assert spec["shutdownAfterJobFinishes"] is True
        spec = spec["rayClusterSpec"]
    else:
        assert doc["kind"] == "RayCluster"
    assert spec["rayVersion"] and spec["authOptions"]["mode"] == "token"
    head = _containers(spec["headGroupSpec"])[0]
    workers = spec["workerGroupSpecs"]
    assert workers and all(int(w["rayStartParams"]["num-gpus"]) >= 1 for w in workers)
    for container in [head] + [c for w in workers for c in _containers(w)]:
        assert container["image"]
        assert any(e["name"] == "MLFLOW_TRACKING_URI" for e in container["env"])
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/results"}
    for w in workers:
        for c in _containers(w):
            assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"]


def test_runtime_env_excludes_local_state():
    with open(f"{REPO}/clusters/runtime_env.yaml") as f:
        env = yaml.safe_load(f)
    assert env["working_dir"] == "."
    assert {".venv/", ".git/", "results/"} <= set(env["excludes"])


# ray start --head + ray job submit ----------------------------------------------------------------
@pytest.fixture(scope="module")
def head(ray_cluster):
    """The repository's own clusters/local/start-head.sh (every port on 127.0.0.1) in a temp dir,
    stopped by stop-head.sh, which must leave the session's other Ray cluster running."""
    ray_cluster.ensure()
    tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    port, dash, client, agent = free_port(), free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        PATH=f"{BIN}:{os.environ['PATH']}",
        PORT=str(port),
        DASHBOARD_PORT=str(dash),
        CLIENT_PORT=str(client),
        AGENT_PORT=str(agent),
        TEMP_DIR=tmp,
    )
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        [f"{REPO}/clusters/local/start-head.sh"], env=env, cwd=REPO, timeout=180, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        yield f"http://127.0.0.1:{dash}", env, tmp, started.stdout
    finally:
        stopped = subprocess.run(
            [f"{REPO}/clusters/local/stop-head.sh"], env=env, cwd=REPO, timeout=180, capture_output=True, text=True
        )
        assert stopped.returncode == 0, stopped.stderr
        import ray

        assert ray.is_initialized() and ray.cluster_resources().get("CPU")  # the other cluster survived
        shutil.rmtree(tmp, ignore_errors=True)


def _loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or addr).is_loopback


def _head_processes(tmp: str) -> list:
    import psutil

    roots = [
        psutil.Process(int(p)) for p in open(os.path.join(tmp, "head.pids")).read().split() if psutil.pid_exists(int(p))
    ]
    procs = {p.pid: p for r in roots for p in [r, *r.children(recursive=True)]}
    return list(procs.values())


def test_local_head_listens_on_loopback_only_and_prints_runnable_commands(head):
    """Every listening socket of the head's processes (GCS, raylet, dashboard and its agents, the
    client server, workers) is on 127.0.0.1; the printed submit command names the venv's ray."""
    import psutil

    _, _, tmp, printed = head
    procs = _head_processes(tmp)
    assert len(procs) >= 5
    listening = []
    for p in procs:
        try:
            listening += [(p.name(), c.laddr) for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert listening, "the head must listen somewhere"
    public = [(name, addr) for name, addr in listening if not _loopback(addr.ip)]
    assert not public, public
    ours = printed.split("Submit a sweep", 1)[1]  # (Ray's own "next steps" come before)
    assert ".venv/bin/ray job submit" in ours and "--runtime-env clusters/runtime_env.yaml" in ours
    assert "--working-dir" not in ours  # the runtime env uploads the working dir itself (no override warning)


def _submit(
    address: str, env: dict, spec: str, submission_id: str, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [
        f"{BIN}/ray",
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        submission_id,
        "--runtime-env",
        "clusters/runtime_env.yaml",
    ]
    cmd += [] if wait else ["--no-wait"]
    cmd += ["--", "python", "-m", "sweep.cli", "run", spec]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _status(address: str, env: dict, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_status(submission_id).value


def _spec(path, out, ckpt) -> str:
    raw = {
        "name": "job",
        "seed": 9,
        "model": {"name": "lenet5", "checkpoint": ckpt},
        "data": {"name": "digits", "eval_size": 200, "calibration_size": 256},
        "hardware": {"faults": {"stuck_at_gmax_rate": 0.01}},
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.02, 0.08]}},
        "mitigations": ["none", "ec"],
        "trials": 40,
        "execution": {"workers": 2, "batch_size": 200, "trials_per_task": 1},
        "output": {"dir": str(out), "flush_rows": 4},
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _table(out):
    return ds.dataset(os.path.join(out, "rows")).to_table().to_pandas().sort_values(KEY).reset_index(drop=True)


def test_job_submit_runs_a_sweep_and_a_killed_driver_resumes_to_the_same_table(head, lenet_checkpoint, tmp_path):
    address, env, _, _ = head
    ckpt = lenet_checkpoint[0]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    spec_a = _spec(tmp_path / "a.yaml", clean, ckpt)
    res = _submit(address, env, spec_a, "xbar-a")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert _status(address, env, "xbar-a") == "SUCCEEDED"
    raw = yaml.safe_load(open(spec_a))
    plan = make_plan(validate(raw), raw)
    a = _table(clean)
    assert len(a) == plan.rows_total and not a.duplicated(KEY).any()

    # the same sweep into another directory; SIGKILL its driver once rows are on disk
    spec_b = _spec(tmp_path / "b.yaml", killed, ckpt)
    assert _submit(address, env, spec_b, "xbar-b1", wait=False).returncode == 0
    deadline = time.time() + 300
    rows_dir = killed / "rows"
    while time.time() < deadline and not (
        rows_dir.exists() and any(p.name.startswith("part-") for p in rows_dir.iterdir())
    ):
        time.sleep(0.2)
    driver = subprocess.run(["pgrep", "-f", f"sweep.cli run {spec_b}"], capture_output=True, text=True).stdout.split()
    assert driver, "the job's driver process must be running"
    for pid in driver:
        os.kill(int(pid), signal.SIGKILL)
    while _status(address, env, "xbar-b1") in ("RUNNING", "PENDING"):
        time.sleep(1)
    partial = len(ds.dataset(str(rows_dir)).to_table())
    assert 0 < partial < plan.rows_total
    res = _submit(address, env, spec_b, "xbar-b2")  # the same command again
    assert res.returncode == 0 and _status(address, env, "xbar-b2") == "SUCCEEDED", res.stdout[-3000:]
    b = _table(killed)
    assert len(b) == plan.rows_total and not b.duplicated(KEY).any()
    for col in ["instance_seed", "top1", "top5", "loss", "count"]:
        assert a[col].equals(b[col]), col


def test_slurm_script_starts_a_two_node_ray_and_runs_the_sweep_through_shims(tmp_path):
    """clusters/slurm/xbar-sweep.sbatch run for real: `sbatch`, `srun` and `scontrol` are small shims
    on PATH (tests/shims/slurm) that run each step here, every node on 127.0.0.1. The script's head and
    worker start, token authentication (a token file it creates), address passing and the sweep launch
    all run: both nodes join, both take trials, every row is written. Catches: a broken token set-up,
    a wrong address, a worker that never joins, workers/CPUs computed wrongly for the allocation."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "slurm",
                "seed": 3,
                "model": {"name": "lenet5", "train": {"epochs": 1}},
                "data": {"name": "digits", "eval_size": 100, "calibration_size": 256},
                "hardware": {"faults": {"stuck_at_gmax_rate": 0.01}},
                "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.02, 0.08]}},
                "mitigations": ["none"],
                "trials": 4,
                "execution": {"workers": 1, "batch_size": 100, "trials_per_task": 1},
                "output": {"dir": str(tmp_path / "unused")},
            }
        )
    )
    out, token = tmp_path / "out", tmp_path / "ray-token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        PATH=f"{REPO}/tests/shims/slurm:{BIN}:{env['PATH']}",
        SPEC=str(spec),
        OUTPUT=str(out),
        VENV=os.path.dirname(BIN),
        RAY_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
        RAY_AUTH_TOKEN_PATH=str(token),
        SLURM_JOB_NODELIST="node-a,node-b",
        SLURM_CPUS_PER_TASK="1",
    )
    log_path = tmp_path / "slurm-job.out"  # a file, not a pipe: the background steps outlive the script
    with open(log_path, "w") as log_file:
        job = subprocess.Popen(
            ["sbatch", f"{REPO}/clusters/slurm/xbar-sweep.sbatch"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            job.wait(timeout=400)
        finally:  # the allocation ends: its background `ray start --block` steps stop their nodes
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    log = log_path.read_text()
    assert job.returncode == 0, log[-4000:]
    assert "2 of 2 nodes alive" in log and f"ray head on node-a (127.0.0.1:{env['RAY_PORT']})" in log, log[-4000:]
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) == 64
    rows = ds.dataset(str(out / "rows")).to_table().to_pandas()
    assert len(rows) == 2 * 4 and rows.worker_pid.nunique() == 2  # one worker per node (1 CPU each)
    import psutil

    def steps() -> list:  # this job's `ray start` steps (head and worker), found by their GCS port
        mark = (f"--port={env['RAY_PORT']}", f"127.0.0.1:{env['RAY_PORT']}")
        return [
            p for p in psutil.process_iter(["cmdline"]) if any(m in " ".join(p.info["cmdline"] or []) for m in mark)
        ]

    deadline = time.time() + 90
    while steps():
        assert time.time() < deadline, "the Slurm job's Ray nodes are still running 90 s after it ended"
        time.sleep(1)
