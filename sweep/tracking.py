"""MLflow tracking: one parent run per sweep, one child run per (point, mitigation).

The parent run holds the spec (artifact ``spec.yaml``), the spec flattened into params, and
tags ``xbar.sweep_id``, ``xbar.spec_hash``, ``xbar.version``. A child run per (point,
mitigation) holds the swept parameters as params and n, mean, std, min, p5, median, p95 of top-1
(plus mean top-5 and loss) as metrics. Logging is idempotent: children are found again by their
tags and updated, so ``xbar-sweep mlflow-sync DIR`` can be run any number of times.

Default tracking URI: ``sqlite:///<output>/mlflow.db`` with artifacts in ``<output>/mlartifacts``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Fail fast when a server is down (the default retries with back-off for minutes); the sweep
# goes on and `xbar-sweep mlflow-sync` logs later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

import pandas as pd  # noqa: E402

logging.getLogger("mlflow").setLevel(logging.WARNING)  # no table-creation chatter in sweep logs

from .results import is_local, local_path  # noqa: E402

CHILD_STATS = ("n", "mean", "std", "min", "p5", "median", "p95")


def default_tracking(output_dir: str, tracking_uri: str | None) -> tuple[str | None, str | None]:
    """(tracking URI, artifact location) for a sweep output: the spec's URI, else
    ``MLFLOW_TRACKING_URI`` (set on every pod of the KubeRay manifests), else a SQLite store next to
    a local output with artifacts in ``<output>/mlartifacts``. A tracking server chooses its own
    artifact location."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None:
        return uri, None
    if not is_local(output_dir):
        return None, None
    root = local_path(output_dir)
    return f"sqlite:///{root}/mlflow.db", f"file://{root}/mlartifacts"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = str(d)[:6000]
    return out


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def parent(
        self, run_id: str | None, sweep_id: str, spec_hash: str, version: str, params: dict, spec_yaml: str
    ) -> str:
        """Create the sweep's parent run (or reuse ``run_id``); returns its id."""
        from mlflow.entities import Param, RunTag

        if run_id is not None:
            try:
                self.client.get_run(run_id)
                return run_id
            except Exception:  # deleted or another store: start a fresh parent
                pass
        exp = self.experiment_id()
        tags = {"xbar.sweep_id": sweep_id, "xbar.spec_hash": spec_hash, "xbar.version": version, "xbar.kind": "sweep"}
        run = self.client.create_run(exp, tags=tags, run_name=sweep_id)
        rid = run.info.run_id
        items = [Param(k, v) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(rid, params=items[i : i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "spec.yaml")
            with open(path, "w") as f:
                f.write(spec_yaml)
            self.client.log_artifact(rid, path)
        self.client.log_batch(rid, tags=[RunTag("xbar.status", "running")])
        return rid

    def children(
        self, parent_id: str, summary: pd.DataFrame, params_of: dict[str, dict], extra: dict[tuple, dict]
    ) -> int:
        """Log or update one child run per summary row (point_id, mitigation, stats...)."""
        from mlflow.entities import Metric, Param, RunTag

        exp = self.experiment_id()
        existing = {}
        for r in self._search(exp, f"tags.`mlflow.parentRunId` = '{parent_id}'"):
            existing[(r.data.tags.get("xbar.point_id"), r.data.tags.get("xbar.mitigation"))] = r.info.run_id
        now = int(time.time() * 1000)
        for rec in summary.to_dict("records"):
            key = (rec["point_id"], rec["mitigation"])
            rid = existing.get(key)
            if rid is None:
                tags = {
                    "mlflow.parentRunId": parent_id,
                    "xbar.point_id": key[0],
                    "xbar.mitigation": key[1],
                    "xbar.kind": "point",
                }
                rid = self.client.create_run(exp, tags=tags, run_name=f"{key[0]}:{key[1]}").info.run_id
                params = {**params_of[key[0]], "mitigation": key[1], "point_id": key[0]}
                self.client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
            values = {f"top1_{s}": rec[s] for s in CHILD_STATS} | extra.get(key, {})
            metrics = [
                Metric(k, float(v), now, 0) for k, v in values.items() if v is not None and not math.isnan(float(v))
            ]
            self.client.log_batch(rid, metrics=metrics, tags=[RunTag("xbar.rows", str(int(rec["n"])))])
            self.client.set_terminated(rid, "FINISHED")
        return len(summary)

    def finish(self, parent_id: str, status: str) -> None:
        self.client.set_tag(parent_id, "xbar.status", status)
        self.client.set_terminated(parent_id, "FINISHED" if status == "complete" else "KILLED")

    def _search(self, exp: str, filter_string: str) -> list:
        runs: list = []
        token = None
        while True:
            page = self.client.search_runs([exp], filter_string, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs
