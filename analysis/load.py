"""Load a sweep's Parquet output (a directory or a pyarrow filesystem URI) - nothing else.

``rows/`` holds one row per (trial, mitigation); ``plan.parquet`` one row per sweep point with
its swept parameters; ``stopping.parquet`` (adaptive sweeps) each point's final instance count.
Works on a finished or a running sweep (only complete part files are read).
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

KEY = ["point_id", "instance", "mitigation"]


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def load_rows(uri: str, mitigations: list[str] | None = None) -> pa.Table:
    """All result rows of the sweep at ``uri`` (one per key; rows of points no longer in the
    plan, left by an earlier ``--force``d spec, are dropped)."""
    fs, root = _fs(uri)
    if fs.get_file_info(f"{root}/rows").type == pafs.FileType.NotFound:
        raise NoRows(f"{uri}: no rows yet (no rows/ directory): nothing to report")
    table = ds.dataset(f"{root}/rows", filesystem=fs, format="parquet").to_table()
    if table.num_rows == 0:
        raise NoRows(f"{uri}: no rows yet: nothing to report")
    points = load_points(uri)
    table = table.filter(pc.is_in(table.column("point_id"), points.column("point_id")))
    if mitigations is not None:
        table = table.filter(pc.is_in(table.column("mitigation"), pa.array(mitigations)))
    indexed = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(KEY, use_threads=False).aggregate([("_i", "min")]).column("_i_min")
    return table if len(first) == table.num_rows else table.take(pc.sort_indices(first))


def load_points(uri: str) -> pa.Table:
    fs, root = _fs(uri)
    with fs.open_input_file(f"{root}/plan.parquet") as f:
        return pq.read_table(f)


def load_stopping(uri: str) -> pd.DataFrame | None:
    fs, root = _fs(uri)
    path = f"{root}/stopping.parquet"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_file(path) as f:
        return pq.read_table(f).to_pandas()


def axes_of(points: pa.Table) -> list[str]:
    """The swept parameters (plan columns other than the ids and the hardware JSON)."""
    return [c for c in points.column_names if c not in ("point_index", "point_id", "hardware")]


def axis_groups(points: pa.Table) -> list[list[str]]:
    """Swept parameters grouped as they advance: one group per grid axis, one per zipped group
    (from the plan's metadata; every axis its own group for plans written without it)."""
    meta = points.schema.metadata or {}
    raw = meta.get(b"xbar.axis_groups")
    axes = axes_of(points)
    if raw is None:
        return [[a] for a in axes]
    return [[a for a in g if a in axes] for g in json.loads(raw) if any(a in axes for a in g)]


class NoRows(ValueError):
    """A sweep output with no result rows yet."""


def expected_rows(uri: str) -> int | None:
    """Rows the plan asks for (adaptive sweeps: their final instance counts), None if unknown."""
    points = load_points(uri)
    meta = points.schema.metadata or {}
    if b"xbar.instances" not in meta:
        return None
    labels = len(json.loads(meta[b"xbar.mitigations"]))
    stopping = load_stopping(uri)
    if stopping is not None and "n" in stopping:  # one row per (point, mitigation)
        return int(stopping["n"].sum())
    return points.num_rows * int(meta[b"xbar.instances"]) * labels


def load_frame(uri: str, mitigations: list[str] | None = None) -> pd.DataFrame:
    """Rows as a DataFrame, one column per swept parameter, sorted by point and instance."""
    return (
        load_rows(uri, mitigations)
        .to_pandas()
        .sort_values(["point_index", "mitigation", "instance"])
        .reset_index(drop=True)
    )
