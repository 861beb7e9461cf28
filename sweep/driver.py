"""The sweep driver: spec -> plan -> (resume) -> Ray trials -> Parquet rows -> MLflow -> summary.

Everything that can refuse a spec happens before anything is written or any Ray work starts.
Rerunning the same command on the same output computes only the missing
(point, instance, mitigation) rows; a different spec is refused unless ``force``, and then the
rows whose key is still in the plan are kept (a point id hashes everything that changes a
trial's result, so a kept row is always valid) and the rest are computed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from importlib import metadata

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from rich.console import Console
from rich.text import Text

from analysis.summary import summarize

from .adaptive import AdaptiveStopping
from .console import SweepProgress, say, summary_table
from .execution import RaySession, check_local_resources, run_tasks
from .interrupts import SweepInterrupted, stop_signals_raise
from .lease import OutputLease
from .plan import Plan, Task, make_plan
from .preflight import preflight
from .preparation import cached_checkpoints, prepare_checkpoints, weight_digests
from .results import ResultStore, RowWriter, row_schema
from .spec import SpecError, SweepSpec
from .tracking import Tracker, default_tracking


def package_version() -> str:
    try:
        return metadata.version("xbar-sweep")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class SweepOutcome:
    plan: Plan
    rows_total: int
    rows_present: int
    rows_written: int
    summary: pd.DataFrame | None
    mlflow_logged: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.rows_present == self.rows_total


def plan_table(plan: Plan) -> pa.Table:
    cols: dict[str, list] = {"point_index": [], "point_id": []}
    for axis in plan.axis_types:
        cols[axis] = []
    cols["hardware"] = []
    for p in plan.points:
        cols["point_index"].append(p.index)
        cols["point_id"].append(p.id)
        for axis, t in plan.axis_types.items():
            cols[axis].append(str(p.params[axis]) if t == "string" else p.params[axis])
        cols["hardware"].append(p.spec.hardware.model_dump_json())
    schema = pa.schema(
        [
            ("point_index", pa.int32()),
            ("point_id", pa.string()),
            *[(a, pa.type_for_alias(t)) for a, t in plan.axis_types.items()],
            ("hardware", pa.string()),
        ]
    )
    sweep = plan.spec.sweep
    groups = [[a] for a in sweep.grid] + [list(g) for g in sweep.zip]  # zipped axes advance together
    meta = {
        "xbar.axis_groups": json.dumps(groups),
        "xbar.instances": str(plan.instances),
        "xbar.mitigations": json.dumps(list(plan.labels)),
    }
    return pa.Table.from_pydict(cols, schema=schema.with_metadata(meta))


def compose_rows(plan: Plan, task: Task, rows: list[dict], version: str) -> list[dict]:
    point = plan.points[task.point_index]
    params = {a: (str(point.params[a]) if t == "string" else point.params[a]) for a, t in plan.axis_types.items()}
    out = []
    for r in rows:
        r = dict(r)
        finished = r.pop("finished")
        out.append(
            {
                "sweep_id": plan.sweep_id,
                "spec_hash": plan.spec_hash,
                "point_id": point.id,
                "point_index": point.index,
                **params,
                **r,
                "version": version,
                "timestamp": dt.datetime.fromtimestamp(finished, tz=dt.timezone.utc),
            }
        )
    return out


class _MlflowLink:
    """The sweep's MLflow parent run; every failure becomes a warning (the sweep goes on)."""

    def __init__(self, spec: SweepSpec, manifest: dict, console: Console, warnings: list[str]) -> None:
        self.console, self.warnings = console, warnings
        self.info = manifest.setdefault("mlflow", {})
        self.tracker: Tracker | None = None
        cfg = spec.output.mlflow
        if not cfg.enabled:
            return
        uri, artifacts = default_tracking(spec.output.dir, cfg.tracking_uri)
        if uri is None:
            self.warn("output is not a local directory and output.mlflow.tracking_uri is not set: no MLflow logging")
            return
        self.info.update(
            {"tracking_uri": uri, "experiment": cfg.experiment or spec.name, "artifact_location": artifacts}
        )
        self.tracker = Tracker(uri, self.info["experiment"], artifacts)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.console.print(Text.assemble(("warning: ", "yellow"), msg))

    def start(self, plan: Plan, spec_yaml: str, version: str) -> None:
        if self.tracker is None:
            return
        try:
            params = plan.spec.model_dump(mode="json", exclude={"output", "sweep"})
            params["sweep"] = json.dumps(plan.spec.sweep.model_dump(mode="json"))
            self.info["parent_run_id"] = self.tracker.parent(
                self.info.get("parent_run_id"), plan.sweep_id, plan.spec_hash, version, params, spec_yaml
            )
        except Exception as e:  # noqa: BLE001 - any MLflow/network failure must not stop the sweep
            self.info["synced"] = False
            self.warn(
                f"MLflow unreachable at {self.info['tracking_uri']} ({type(e).__name__}: {e}); "
                "the sweep continues - run `xbar-sweep mlflow-sync <output>` later"
            )


def sync_mlflow(store: ResultStore, console: Console, tracking_uri: str | None = None) -> int:
    """Log a sweep's parent and child runs from its output (idempotent). Returns child runs logged."""
    manifest = store.read_json("manifest.json")
    if manifest is None:
        raise SpecError(f"{store.uri}: no manifest.json - not a sweep output")
    raw = yaml.safe_load(store.read_bytes("spec.yaml"))
    info = manifest.setdefault("mlflow", {})
    uri, artifacts = default_tracking(store.uri, tracking_uri or info.get("tracking_uri"))
    if uri is None:
        raise SpecError("give --tracking-uri: the output is not a local directory")
    tracker = Tracker(uri, info.get("experiment") or raw["name"], info.get("artifact_location") or artifacts)
    info.update({"tracking_uri": uri, "experiment": tracker.experiment})
    params = {k: v for k, v in raw.items() if k not in ("output", "sweep")}
    params["sweep"] = json.dumps(raw.get("sweep", {}))
    spec_yaml = store.read_bytes("spec.yaml").decode()
    info["parent_run_id"] = tracker.parent(
        info.get("parent_run_id"),
        manifest["sweep_id"],
        manifest["spec_hash"],
        manifest.get("version", package_version()),
        params,
        spec_yaml,
    )
    points = pq_read(store, "plan.parquet")
    rows = store.read_rows(set(points.column("point_id").to_pylist()))
    n = 0
    if rows is not None and rows.num_rows:
        rows = rows.filter(pc.is_in(rows.column("mitigation"), pa.array(manifest["mitigations"])))
        n = _log_children(tracker, info["parent_run_id"], rows, points)
    tracker.finish(info["parent_run_id"], manifest.get("status", "running"))
    info["synced"] = True
    store.write_json("manifest.json", manifest)
    say(console, f"MLflow: parent run {info['parent_run_id']} and {n} child runs at {uri}")
    return n


def log_report(store: ResultStore, report_dir: str, console: Console) -> None:
    """Log a report directory (report.html, PNGs) and the summary table as artifacts of the sweep's
    parent MLflow run (created by the sweep or by mlflow-sync)."""
    manifest = store.read_json("manifest.json") or {}
    info = manifest.get("mlflow", {})
    if not info.get("parent_run_id") or not info.get("tracking_uri"):
        raise SpecError(f"{store.uri}: no MLflow parent run recorded; run `xbar-sweep mlflow-sync {store.uri}` first")
    tracker = Tracker(info["tracking_uri"], info["experiment"], info.get("artifact_location"))
    tracker.client.log_artifacts(info["parent_run_id"], report_dir, artifact_path="report")
    say(console, f"MLflow: report logged to run {info['parent_run_id']} (artifacts/report)")


def pq_read(store: ResultStore, rel: str) -> pa.Table:
    import pyarrow.parquet as pq

    with store.fs.open_input_file(store.path(rel)) as f:
        return pq.read_table(f)


def _log_children(tracker: Tracker, parent_id: str, rows: pa.Table, points: pa.Table) -> int:
    summary = summarize(rows)
    df = rows.select(["point_id", "mitigation", "top5", "loss"]).to_pandas()
    means = df.groupby(["point_id", "mitigation"], sort=False)[["top5", "loss"]].mean()
    extra = {k: {"top5_mean": v["top5"], "loss_mean": v["loss"]} for k, v in means.to_dict("index").items()}
    pdf = points.drop_columns(["hardware"]).to_pandas()
    params_of = {r["point_id"]: {k: v for k, v in r.items() if k != "point_id"} for r in pdf.to_dict("records")}
    return tracker.children(parent_id, summary, params_of, extra)


def _resume_state(
    plan: Plan, store: ResultStore, spec: SweepSpec, console: Console
) -> tuple[set, AdaptiveStopping | None, list[Task]]:
    """Keys already present (unreadable part files moved aside first), adaptive state, pending tasks."""
    for name, reason in store.quarantine_unreadable_parts():
        say(console, f"part file {name} is unreadable ({reason}); moved to rows/_corrupt/, its rows are recomputed")
    done = store.done_keys() & plan.keys()
    adaptive = None
    if spec.trials.until is not None:
        present = {}
        existing = store.read_rows({p.id for p in plan.points}) if done else None
        if existing is not None:
            metric = spec.trials.until.metric
            for pid, i, m, v in zip(
                *(existing.column(c).to_pylist() for c in ("point_id", "instance", "mitigation", metric))
            ):
                if (pid, i, m) in done:
                    present[(pid, i, m)] = v
        adaptive = AdaptiveStopping(plan, spec.trials.until, present)
        return done, adaptive, adaptive.initial_tasks()
    return done, None, plan.pending(done)


def run_sweep(
    spec: SweepSpec, raw: dict, *, force: bool = False, console: Console | None = None, worker_cls: type | None = None
) -> SweepOutcome:
    """Validate and preflight everything, take the output's lease, then run (or resume) the sweep.

    Order: spec and every point validated (memory included) -> output, data, checkpoint and local
    resources checked -> the output lease taken -> models loaded from the cache or trained as Ray
    tasks (Ray joined or started only when work remains; the cluster's resources checked first)
    -> point ids fixed by the trained weights -> spec, plan and manifest written -> trials.
    A refusal at any step before the writes leaves the output as it was (exit 2)."""
    console = console or Console()
    plan = make_plan(spec, raw)
    preflight(spec)
    check_local_resources(spec.execution)
    store = ResultStore(spec.output.dir)
    existed = store.root_exists()
    lease = OutputLease(store).acquire()
    for w in lease.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), w))
    try:
        with RaySession(spec.execution) as session:
            return _run_leased(spec, raw, plan, store, force, console, worker_cls, session)
    except SpecError:
        lease.release()
        if not existed:  # refused before writing: leave no trace of the lease either
            store.remove_if_empty()
        raise
    finally:
        lease.release()


def _run_leased(
    spec: SweepSpec,
    raw: dict,
    plan: Plan,
    store: ResultStore,
    force: bool,
    console: Console,
    worker_cls: type | None,
    session: RaySession,
) -> SweepOutcome:
    version = package_version()
    previous = store.read_json("manifest.json")
    checkpoints, missing = cached_checkpoints(plan, store, version)
    if missing:  # some model must be trained: Ray (and its resource check) before any write
        session.ensure()
        checkpoints = prepare_checkpoints(plan, store, console, version, session.ensure)
    plan = make_plan(spec, raw, weight_digests(checkpoints))
    if previous is not None and previous.get("spec_hash") != plan.spec_hash and not force:
        raise SpecError(
            f"output.dir {spec.output.dir!r} already holds sweep {previous.get('sweep_id')!r} with a "
            "different spec or other trained weights; rerun with --force to keep the rows that still "
            "match and compute the rest"
        )
    done, adaptive, tasks = _resume_state(plan, store, spec, console)
    if tasks:
        session.ensure()
    # --- from here on the output is written -------------------------------------------------------
    spec_yaml = yaml.safe_dump(raw, sort_keys=False)
    store.write_bytes("spec.yaml", spec_yaml.encode())
    store.write_table("plan.parquet", plan_table(plan))
    same = previous is not None and previous.get("spec_hash") == plan.spec_hash
    manifest = {
        "sweep_id": plan.sweep_id,
        "spec_hash": plan.spec_hash,
        "name": spec.name,
        "version": version,
        "points": len(plan.points),
        "instances": plan.instances,
        "mitigations": list(plan.labels),
        "axes": plan.axis_types,
        "rows_total": plan.rows_total,
        "status": "running",
        "started": dt.datetime.now(dt.timezone.utc).isoformat(),
        "mlflow": (previous or {}).get("mlflow", {}) if same else {},
        "parts": (previous or {}).get("parts", {}),
    }
    warnings: list[str] = []
    mlflow = _MlflowLink(spec, manifest, console, warnings)  # store creation serialised by the lease
    store.write_json("manifest.json", manifest)
    say(
        console,
        f"{plan.sweep_id}: {plan.describe()}; {len(done)} present, "
        f"{plan.rows_total - len(done)} to compute -> {spec.output.dir}",
    )
    writer = RowWriter(store, row_schema(plan.axis_types), spec.output.flush_rows, spec.output.flush_seconds)
    target = adaptive.rows_target if adaptive else plan.rows_total
    interrupted: SweepInterrupted | None = None
    try:
        with stop_signals_raise():
            mlflow.start(plan, spec_yaml, version)
            store.write_json("manifest.json", manifest)
            with SweepProgress(console, target, len(plan.labels), len(done)) as progress:

                def on_rows(task: Task, rows: list[dict]) -> list[Task]:
                    composed = compose_rows(plan, task, rows, version)
                    writer.add(composed)
                    more = adaptive.add(composed) if adaptive else []
                    if adaptive:
                        progress.set_total(adaptive.rows_target)
                    progress.advance(len(rows))
                    return more

                if tasks:
                    run_tasks(plan, tasks, checkpoints, on_rows, worker_cls)
    except SweepInterrupted as stop:
        interrupted = stop
    finally:
        writer.close()  # whatever arrived is kept, also on a stop signal
        manifest["parts"].update(writer.parts)
        if adaptive is not None:
            store.write_table("stopping.parquet", pa.Table.from_pandas(adaptive.table(), preserve_index=False))
    if interrupted is not None:
        manifest["status"] = "interrupted"
        manifest["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
        parent = manifest["mlflow"].get("parent_run_id")
        if mlflow.tracker is not None and parent:
            try:
                mlflow.tracker.finish(parent, "interrupted")
            except Exception:  # noqa: BLE001 - a stop must not fail on MLflow
                pass
        store.write_json("manifest.json", manifest)
        interrupted.rows_kept = len(done) + writer.written
        raise interrupted

    table = store.read_rows({p.id for p in plan.points})
    if table is not None:
        table = table.filter(pc.is_in(table.column("mitigation"), pa.array(list(plan.labels))))
    if adaptive is not None:
        target = adaptive.rows_target
        if table is not None:  # rows beyond a point's final n (from an earlier rule) do not count
            final_n = {pid: st.n for pid, st in adaptive.state.items()}
            keep = [
                i < final_n[p]
                for p, i in zip(table.column("point_id").to_pylist(), table.column("instance").to_pylist())
            ]
            table = table.filter(pa.array(keep))
    present = 0 if table is None else table.num_rows
    finished = adaptive is None or all(st.finished for st in adaptive.state.values())
    manifest["status"] = "complete" if present == target and finished else "incomplete"
    if adaptive is not None:
        manifest["adaptive"] = {pid: {"n": st.n, "reason": st.reason} for pid, st in adaptive.state.items()}
    manifest["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    summary = None
    logged = False
    if table is not None and table.num_rows:
        summary = summarize(table)
        points = plan_table(plan)
        console.print(
            summary_table(
                summary,
                points.drop_columns(["hardware"]).to_pandas(),
                f"{plan.sweep_id}: top-1 per point and mitigation",
            )
        )
        if mlflow.tracker is not None and manifest["mlflow"].get("parent_run_id"):
            try:
                _log_children(mlflow.tracker, manifest["mlflow"]["parent_run_id"], table, points)
                mlflow.tracker.finish(manifest["mlflow"]["parent_run_id"], manifest["status"])
                manifest["mlflow"]["synced"] = logged = True
            except Exception as e:  # noqa: BLE001
                manifest["mlflow"]["synced"] = False
                mlflow.warn(
                    f"MLflow logging failed ({type(e).__name__}: {e}); "
                    f"run `xbar-sweep mlflow-sync {spec.output.dir}` later"
                )
    store.write_json("manifest.json", manifest)
    return SweepOutcome(plan, target, present, writer.written, summary, logged, warnings)
