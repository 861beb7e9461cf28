"""Ray execution: a pool of trial actors fed with a bounded number of tasks in flight.

* ``ray.init()`` joins the cluster named by ``RAY_ADDRESS`` (as under ``ray job submit``);
  otherwise it starts a local Ray with enough logical CPUs for the requested workers.
* Each actor gets ``num_cpus``/``num_gpus`` from the spec (fractional GPUs allowed) and keeps its
  model replica and data for the whole sweep.
* At most ``max_in_flight`` tasks are submitted at once (backpressure); results are handed to
  ``on_rows`` as they arrive and not kept.
* An actor that dies is restarted by Ray and its task retried (``max_task_failures`` times);
  past that the task is re-queued on the remaining actors. Trials are deterministic, so a
  re-run gives the same rows. An exception raised *by* a trial is a bug: the sweep stops.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .plan import Plan, Task
from .spec import ExecutionSection, SpecError


class SweepFailed(RuntimeError):
    pass


class RaySession:
    """Ray for the sweep's tasks (model training, trials), started on first need: joined (through
    ``RAY_ADDRESS``) or started locally, its resources checked against the spec before anything
    else runs, and stopped at the end if this process started it."""

    def __init__(self, ex: ExecutionSection) -> None:
        self.ex = ex
        self.started = self.owns = False

    def ensure(self) -> None:
        if self.started:
            return
        self.owns = init_ray(self.ex)
        self.started = True
        check_cluster_resources(self.ex)

    def close(self) -> None:
        if self.owns:
            import ray

            ray.shutdown()
        self.started = self.owns = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def ray_session(ex: ExecutionSection, needed: bool = True) -> Iterator[RaySession]:
    """A :class:`RaySession`, started at once when ``needed``."""
    session = RaySession(ex)
    try:
        if needed:
            session.ensure()
        yield session
    finally:
        session.close()


def local_resources() -> tuple[int, int]:
    """(CPUs, GPUs) of this machine."""
    import torch

    return os.cpu_count() or 1, torch.cuda.device_count()


def resource_errors(ex: ExecutionSection, total: dict[str, float], nodes: list[dict[str, float]]) -> list[str]:
    """Why ``workers`` actors of ``cpus_per_worker``/``gpus_per_worker`` cannot all run at once on a
    cluster with ``total`` resources and per-node resources ``nodes`` (empty when they can)."""
    errors = []
    for name, per in (("CPU", ex.cpus_per_worker), ("GPU", ex.gpus_per_worker)):
        if per <= 0:
            continue
        field = f"execution.{name.lower()}s_per_worker"
        biggest = max((n.get(name, 0.0) for n in nodes), default=0.0)
        if per > biggest:
            errors.append(
                f"{field}: {per:g} {name} per worker, but no node has more than {biggest:g} "
                f"(cluster total {total.get(name, 0.0):g}); a worker could never start"
            )
        elif ex.workers * per > total.get(name, 0.0) + 1e-9:
            fit = int((total.get(name, 0.0) + 1e-9) // per)
            errors.append(
                f"execution.workers: {ex.workers} workers x {per:g} {name} = {ex.workers * per:g} {name}, "
                f"but the cluster has {total.get(name, 0.0):g} (at most {fit} such workers)"
            )
    return errors


def check_local_resources(ex: ExecutionSection) -> None:
    """Before Ray starts locally (no RAY_ADDRESS): the request must fit this machine."""
    if os.environ.get("RAY_ADDRESS"):
        return
    cpus, gpus = local_resources()
    errors = resource_errors(ex, {"CPU": cpus, "GPU": gpus}, [{"CPU": cpus, "GPU": gpus}])
    if errors:
        raise SpecError("\n".join(errors + ["(on this machine; join a larger cluster through RAY_ADDRESS)"]))


def check_cluster_resources(ex: ExecutionSection) -> None:
    """After joining a cluster: what it can actually provide (``ray.cluster_resources()``)."""
    import ray

    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    errors = resource_errors(ex, total, nodes)
    if errors:
        raise SpecError("\n".join(errors))


def init_ray(ex: ExecutionSection) -> bool:
    """Connect to or start Ray; returns True when this process started it (and must stop it).

    A Ray started here is a single-node cluster on loopback: before Ray is imported, it is told it
    is not part of a multi-node cluster (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so every service
    binds to 127.0.0.1 and token authentication (and its warning on every run) can stay off."""
    if os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING)
        return False
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    try:
        from ray._private import ray_constants

        loopback = not ray_constants.ENABLE_RAY_CLUSTER
    except ImportError:  # pragma: no cover - a Ray without the constant: keep its defaults
        loopback = False
    if loopback:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # address="local": a new cluster of its own, never a `ray start` cluster that happens to run on
    # this machine (nor a stale record of one in /tmp/ray); joining one is what RAY_ADDRESS is for
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING)
    from .reaper import start  # ends the Ray agents if this driver is killed without cleaning up

    start()
    return True


def task_payload(plan: Plan, task: Task, checkpoint_refs: dict) -> dict:
    """What a worker needs for one task. Checkpoints travel as object-store refs inside the
    payload (fetched once per worker), not as constructor arguments, so a restarted actor needs
    nothing but its spec."""
    from .preparation import model_key, offline_variants

    point = plan.points[task.point_index]
    trials = [(i, plan.seed(point, i), list(labels)) for i, labels in task.trials]
    if point.spec.kind == "train":  # trained from scratch on the instance: no checkpoint to ship
        return {"kind": "train", "point_id": point.id, "params": point.params, "trials": trials}
    key = model_key(point.spec)
    return {
        "point_id": point.id,
        "params": point.params,
        "model_key": key,
        "checkpoint": checkpoint_refs[key],
        "variants": {k: checkpoint_refs[k] for k in offline_variants(point.spec)},
        "trials": trials,
    }


def run_tasks(
    plan: Plan,
    tasks: list[Task],
    checkpoints: dict[str, bytes],
    on_rows: Callable[[Task, list[dict]], list[Task] | None],
    worker_cls: type | None = None,
) -> None:
    """Run ``tasks`` on a pool of ``worker_cls(raw_spec, cpus, gpus)`` actors; ``on_rows`` may
    return further tasks (adaptive stopping), which join the queue."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from .worker import TrialWorker

    ex = plan.spec.execution
    owns = init_ray(ex)  # False inside ray_session (already initialised)
    cls: Any = ray.remote(worker_cls or TrialWorker)
    n = ex.workers if plan.spec.trials.until is not None else max(1, min(ex.workers, len(tasks)))
    retries = ex.max_task_failures
    # one copy of each checkpoint in the object store, shared by every actor on every node
    refs = {k: ray.put(v) for k, v in checkpoints.items()}
    worker_args = (plan.raw, ex.cpus_per_worker, ex.gpus_per_worker)
    actors = [
        cls.options(
            num_cpus=ex.cpus_per_worker, num_gpus=ex.gpus_per_worker, max_restarts=retries, max_task_retries=retries
        ).remote(*worker_args)
        for _ in range(n)
    ]
    alive = set(range(n))
    load = {a: 0 for a in alive}
    cap = max(1, math.ceil(ex.in_flight / n))
    queue: deque[tuple[Task, int]] = deque((t, 0) for t in tasks)
    inflight: dict[Any, tuple[Task, int, int]] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < ex.in_flight:
                free = [a for a in alive if load[a] < cap]
                if not free:
                    break
                a = min(free, key=lambda k: load[k])
                task, failures = queue.popleft()
                ref = actors[a].run.remote(task_payload(plan, task, refs))
                inflight[ref] = (task, a, failures)
                load[a] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=5.0)
            for ref in ready:
                task, a, failures = inflight.pop(ref)
                load[a] -= 1
                try:
                    rows = ray.get(ref)
                except RayTaskError as e:
                    if isinstance(e.cause, RayActorError):
                        raise
                    raise SweepFailed(
                        f"a trial raised an error (point {plan.points[task.point_index].id}):\n{e}"
                    ) from None
                except RayActorError as e:
                    alive.discard(a)  # Ray gave up restarting it: move its task elsewhere
                    if failures + 1 > retries or not alive:
                        raise SweepFailed(f"workers keep dying; last error: {e}") from None
                    queue.appendleft((task, failures + 1))
                    continue
                queue.extend((t, 0) for t in on_rows(task, rows) or ())
    finally:
        for actor in actors:
            ray.kill(actor)
        if owns:
            ray.shutdown()
