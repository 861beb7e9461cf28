"""``xbar-sweep check DIR``: is a finished output whole?

Every planned (point, instance, mitigation) key present exactly once, every part file readable
and equal (rows, sha256) to what the manifest recorded when it was written, the manifest
"complete", and one MLflow child run per (point, mitigation) under the sweep's parent run.
"""

from __future__ import annotations

import hashlib

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .results import KEY, ResultStore


def check_output(store: ResultStore, mlflow: bool = True) -> tuple[list[str], str]:
    """(problems, one-line summary); no problems means the output is whole."""
    manifest = store.read_json("manifest.json")
    if manifest is None:
        return [f"{store.uri}: no manifest.json (not a sweep output)"], ""
    problems = []
    if manifest.get("status") != "complete":
        problems.append(f"manifest status is {manifest.get('status')!r}, not 'complete'")
    with store.fs.open_input_file(store.path("plan.parquet")) as f:
        ids = pq.read_table(f).column("point_id").to_pylist()
    labels, instances = manifest["mitigations"], manifest["instances"]
    n_of = {pid: manifest.get("adaptive", {}).get(pid, {}).get("n", instances) for pid in ids}
    planned = {(p, i, m) for p in ids for i in range(n_of[p]) for m in labels}

    recorded = manifest.get("parts", {})
    readable = []
    for name in store.part_files():
        path = store.path("rows", name)
        try:
            with store.fs.open_input_file(path) as f:
                rows = pq.read_metadata(f).num_rows
        except (OSError, ValueError) as e:
            problems.append(
                f"rows/{name}: unreadable ({str(e).splitlines()[0]}); a rerun moves it to rows/_corrupt/ "
                "and recomputes its rows"
            )
            continue
        readable.append(path)
        if name in recorded:
            with store.fs.open_input_stream(path) as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            if sha != recorded[name]["sha256"] or rows != recorded[name]["rows"]:
                problems.append(f"rows/{name}: differs from the manifest's record ({rows} rows, sha256 {sha[:12]}...)")
    counts: dict[tuple, int] = {}
    if readable:
        t = ds.dataset(readable, filesystem=store.fs, format="parquet").to_table(columns=list(KEY))
        keys = list(zip(*(t.column(c).to_pylist() for c in KEY)))
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
    twice = sorted(k for k in planned if counts.get(k, 0) > 1)
    missing = sorted(k for k in planned if k not in counts)
    if twice:
        problems.append(f"{len(twice)} planned keys appear more than once, e.g. {twice[:3]}")
    if missing:
        problems.append(f"{len(missing)} planned keys are missing, e.g. {missing[:3]}")

    info = manifest.get("mlflow", {})
    if mlflow and info.get("parent_run_id") and info.get("tracking_uri"):
        try:
            from .tracking import Tracker

            tracker = Tracker(info["tracking_uri"], info.get("experiment") or manifest["name"], None)
            exp = tracker.experiment_id()
            children = tracker._search(exp, f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
            have = {(r.data.tags.get("xbar.point_id"), r.data.tags.get("xbar.mitigation")) for r in children}
            want = {(p, m) for p in ids for m in labels}
            if not want <= have:
                problems.append(
                    f"MLflow: {len(want - have)} of {len(want)} child runs missing under parent "
                    f"{info['parent_run_id']} (run `xbar-sweep mlflow-sync {store.uri}`)"
                )
        except Exception as e:  # noqa: BLE001 - an unreachable store is a finding, not a crash
            problems.append(f"MLflow: cannot read {info['tracking_uri']} ({type(e).__name__}: {e})")
    present = sum(1 for k in planned if k in counts)
    summary = f"{present}/{len(planned)} planned rows, {len(store.part_files())} part files, {len(ids)} points"
    if store.exists("rows/_corrupt"):
        summary += "; rows/_corrupt/ holds part files moved aside as unreadable (their rows were recomputed)"
    return problems, summary
