"""One writer per output: an exclusive lease on a sweep's output directory.

A run holds ``<output>/.lease`` for as long as it writes: a small JSON record (owner, host, pid,
start time, heartbeat, token) created with ``O_CREAT | O_EXCL`` (atomic on local and network
file systems), refreshed every ``heartbeat_s`` by a daemon thread and removed on release. A second
run on the same output is refused (exit 2) with a message naming the holder. A lease is stale
when its pid is dead on this host or its heartbeat is older than ``stale_after_s``; a stale lease
is taken over with a warning, through an atomic rename, so two runs can never both take it.

On S3 and S3-compatible stores the lease object is created with a conditional write
(``If-None-Match: *``: atomic create-if-absent) and refreshed or taken over with ``If-Match`` on the
ETag that was read (compare-and-swap), through boto3 (the ``s3`` extra). Without boto3, or on
another object store, the lease is written and read back after a short pause (best effort, said in
a warning).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from .spec import SpecError

LEASE = ".lease"


class _ConditionalS3:
    """The lease object through S3 conditional writes (boto3; endpoint and keys from AWS_*)."""

    def __init__(self, root: str) -> None:
        import boto3

        self.bucket, _, prefix = root.partition("/")
        self.key = f"{prefix}/{LEASE}" if prefix else LEASE
        self.client = boto3.client("s3")

    def _put(self, body: bytes, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def create(self, body: bytes) -> bool:
        """Atomic create-if-absent."""
        return self._put(body, IfNoneMatch="*")

    def replace(self, body: bytes, etag: str) -> bool:
        """Compare-and-swap: only if the object is still the one read with ``etag``."""
        return self._put(body, IfMatch=etag)

    def etag(self) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
        except ClientError:
            return None


def _conditional(store) -> _ConditionalS3 | None:
    if getattr(store, "object_store", False):
        try:
            return _ConditionalS3(store.root)
        except ImportError:
            return None
    return None


@dataclass
class LeaseInfo:
    owner: str
    host: str
    pid: int
    started: float
    heartbeat: float
    token: str

    def describe(self) -> str:
        age = time.time() - self.heartbeat
        return (
            f"pid {self.pid} of {self.owner} on host {self.host} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))} (heartbeat {age:.0f} s ago)"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLease:
    """Context manager holding the lease of one output (a local directory or a store)."""

    def __init__(self, store, heartbeat_s: float = 5.0, stale_after_s: float = 60.0) -> None:
        self.store = store
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        now = time.time()
        self.info = LeaseInfo(getpass.getuser(), socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex)
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = store.local_dir is not None
        self._cas = None if self._local else _conditional(store)
        if not self._local and self._cas is None:
            self.warnings.append(
                f"the lease on {store.uri!r} is best effort (no conditional writes here: "
                "install boto3, the s3 extra, for an atomic one)"
            )

    # -- holder's record --------------------------------------------------------------------
    def _payload(self) -> bytes:
        self.info.heartbeat = time.time()
        return json.dumps(self.info.__dict__).encode()

    def read(self) -> LeaseInfo | None:
        try:
            raw = self.store.read_bytes(LEASE)
        except (FileNotFoundError, OSError):
            return None
        try:
            return LeaseInfo(**json.loads(raw))
        except (ValueError, TypeError):
            return LeaseInfo("?", "?", -1, 0.0, 0.0, "corrupt")  # unreadable: treated as stale

    def stale(self, other: LeaseInfo) -> bool:
        if other.host == self.info.host and other.pid > 0 and not _pid_alive(other.pid):
            return True
        return time.time() - other.heartbeat > self.stale_after_s

    # -- acquire / release -------------------------------------------------------------------
    def _create_local(self) -> bool:
        path = os.path.join(self.store.local_dir, LEASE)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._payload())
        return True

    def _take_over_local(self, other: LeaseInfo) -> bool:
        path = os.path.join(self.store.local_dir, LEASE)
        aside = f"{path}.stale-{self.info.token}"
        try:
            os.rename(path, aside)  # only one contender can move it
        except FileNotFoundError:
            return False
        os.unlink(aside)
        return self._create_local()

    def acquire(self) -> OutputLease:
        self.store.makedirs()
        for _ in range(3):
            if self._local:
                if self._create_local():
                    break
            elif self._cas is not None:
                if self._cas.create(self._payload()):
                    break
            else:
                if self.read() is None:
                    self.store.write_bytes(LEASE, self._payload())
                    time.sleep(0.5)
                    mine = self.read()
                    if mine is not None and mine.token == self.info.token:
                        break
            etag = self._cas.etag() if self._cas is not None else None
            other = self.read()
            if other is None:
                continue  # released between our two looks: try again
            if not self.stale(other):
                raise SpecError(
                    f"output.dir {self.store.uri!r} is in use by another xbar-sweep run: "
                    f"{other.describe()}; wait for it, or remove {LEASE} there if that run is gone"
                )
            self.warnings.append(f"taking over a stale lease of {self.store.uri!r} held by {other.describe()}")
            if self._local:
                if self._take_over_local(other):
                    break
            elif self._cas is not None:
                if etag is not None and self._cas.replace(self._payload(), etag):
                    break  # swapped the stale record for ours; a contender that also read it fails
            else:
                self.store.delete(LEASE)
        else:
            raise SpecError(f"output.dir {self.store.uri!r}: could not acquire the output lease (contended)")
        self._thread = threading.Thread(target=self._beat, name="xbar-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                etag = self._cas.etag() if self._cas is not None else None
                held = self.read()
                if held is None or held.token != self.info.token:
                    return  # taken over (this run looked dead): never overwrite the new holder
                if self._cas is None:
                    self.store.write_bytes(LEASE, self._payload())
                elif etag is None or not self._cas.replace(self._payload(), etag):
                    return  # changed between the two looks: someone else holds it now
            except OSError:
                pass  # a missed heartbeat only makes the lease look older

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = self.read()
        if held is not None and held.token == self.info.token:
            self.store.delete(LEASE)

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
