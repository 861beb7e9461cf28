"""Results on a pyarrow filesystem (a local directory or a URI such as s3://bucket/prefix).

Layout of a sweep's output::

    spec.yaml        the resolved spec (after --set)
    manifest.json    sweep id, spec hash, plan summary, MLflow run id, status
    plan.parquet     one row per sweep point: point id, index, swept parameters, hardware JSON
    rows/part-*.parquet   one row per (trial, mitigation), streamed as results arrive
    models/          trained checkpoints cached by recipe hash

On a filesystem every file is written under a temporary name starting with ``_`` (which
``pyarrow.dataset`` ignores) and then moved into place, so a killed driver never leaves a
half-written file. On an object store (S3 and S3-compatible) an object becomes visible only when
its upload completes, so each file is one upload to its final key: no temporary object, and no
partial object ever visible under ``rows/``. Part files are never modified once written. ``rows/``
reads back as one table with ``pyarrow.dataset.dataset(<output>/rows)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

KEY = ("point_id", "instance", "mitigation")


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return open_filesystem(uri)[1] if is_local(uri) else uri


def row_schema(axis_types: dict[str, str]) -> pa.Schema:
    fields = [
        ("sweep_id", pa.string()),
        ("spec_hash", pa.string()),
        ("point_id", pa.string()),
        ("point_index", pa.int32()),
        *[(name, pa.type_for_alias(t)) for name, t in axis_types.items()],
        ("instance", pa.int32()),
        ("instance_seed", pa.int64()),
        ("mitigation", pa.string()),
        ("top1", pa.float64()),
        ("top5", pa.float64()),
        ("loss", pa.float64()),
        ("count", pa.int32()),
        ("top1_per_epoch", pa.list_(pa.float64())),  # training trials: test top-1 after each epoch
        ("t_sample_s", pa.float64()),
        ("t_map_s", pa.float64()),
        ("t_mitigate_s", pa.float64()),
        ("t_evaluate_s", pa.float64()),
        ("solver_iterations", pa.int32()),  # sinh I-V under exact IR drop: Newton iterations of the slowest read
        ("worker_host", pa.string()),
        ("worker_pid", pa.int32()),
        ("worker_device", pa.string()),
        ("version", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields)


class ResultStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = open_filesystem(uri)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def local_dir(self) -> str | None:
        """The output's directory on this machine, or None for an object store."""
        return self.root if isinstance(self.fs, pafs.LocalFileSystem) else None

    def makedirs(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def root_exists(self) -> bool:
        return self.fs.get_file_info(self.root).type != pafs.FileType.NotFound

    def remove_if_empty(self) -> None:
        """Remove the output directory if nothing is in it (a run refused before writing)."""
        if self.local_dir is not None and os.path.isdir(self.root) and not os.listdir(self.root):
            os.rmdir(self.root)

    def part_files(self) -> list[str]:
        """Names of the row part files (temporary and quarantined files excluded)."""
        if not self.exists("rows"):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path("rows"), recursive=False))
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(("_", "."))
        )

    def quarantine_unreadable_parts(self) -> list[tuple[str, str]]:
        """Move every part file whose Parquet footer cannot be read to ``rows/_corrupt/`` (never
        deleted; pyarrow.dataset ignores names starting with ``_``). Returns (name, reason)."""
        moved = []
        for name in self.part_files():
            try:
                with self.fs.open_input_file(self.path("rows", name)) as f:
                    pq.read_metadata(f)
            except (pa.ArrowInvalid, OSError) as e:
                self.fs.create_dir(self.path("rows", "_corrupt"), recursive=True)
                self.fs.move(self.path("rows", name), self.path("rows", "_corrupt", name))
                moved.append((name, str(e).splitlines()[0]))
        return moved

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    @property
    def object_store(self) -> bool:
        """True for S3-compatible stores, where an upload is atomic and a move is a copy."""
        return self.fs.type_name == "s3"

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomic: write ``_tmp-*`` beside the target, then move it into place (on an object store:
        one upload to the target, which is visible only once complete)."""
        target = self.path(rel)
        parent, _, name = target.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        if self.object_store:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{parent}/_tmp-{uuid.uuid4().hex}-{name}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, target)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any | None:
        return json.loads(self.read_bytes(rel)) if self.exists(rel) else None

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())

    # Rows ------------------------------------------------------------------------------------
    def rows_dataset(self) -> ds.Dataset | None:
        if not self.exists("rows"):
            return None
        return ds.dataset(self.path("rows"), filesystem=self.fs, format="parquet")

    def done_keys(self) -> set[tuple[str, int, str]]:
        dset = self.rows_dataset()
        if dset is None:
            return set()
        t = dset.to_table(columns=list(KEY))
        return set(zip(*(t.column(c).to_pylist() for c in KEY)))

    def read_rows(self, point_ids: set[str] | None = None) -> pa.Table | None:
        """All rows, one per key (a re-run that raced a kill may have written a key twice)."""
        dset = self.rows_dataset()
        if dset is None:
            return None
        t = dset.to_table()
        if point_ids is not None:
            t = t.filter(pc.is_in(t.column("point_id"), pa.array(sorted(point_ids))))
        indexed = t.append_column("_i", pa.array(range(t.num_rows), pa.int64()))
        first = indexed.group_by(list(KEY), use_threads=False).aggregate([("_i", "min")]).column("_i_min")
        if len(first) == t.num_rows:
            return t
        return t.take(pc.sort_indices(first))


class RowWriter:
    """Buffers rows and flushes them as immutable part files (every ``flush_rows`` rows or
    ``flush_seconds`` seconds, and at :meth:`close`)."""

    def __init__(
        self, store: ResultStore, schema: pa.Schema, flush_rows: int = 512, flush_seconds: float = 5.0
    ) -> None:
        self.store, self.schema = store, schema
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._rows: list[dict] = []
        self._last = time.monotonic()
        self._seq = 0
        self.written = 0
        self._stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.parts: dict[str, dict] = {}  # part file -> rows and sha256 (recorded in the manifest)

    def add(self, rows: list[dict]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        name = f"part-{self._stamp}-{self._seq:05d}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        self.store.write_bytes(f"rows/{name}", data)
        self.parts[name] = {"rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}
        self._seq += 1
        self.written += len(self._rows)
        self._rows = []

    def close(self) -> None:
        self.flush()
