"""Spec -> plan: sweep points, trials and their seeds. Pure (no Ray, no I/O but reading a
checkpoint to hash it), so resume and worker-count independence are testable without a cluster.

Points are the product of the ``sweep.grid`` axes (each its own factor) and the ``sweep.zip``
groups (axes of one group advance together), in spec order. A trial is (point, instance
index); every mitigation of the spec runs on it.

Instance seed (documented because every row must be reproducible by hand):

    seed(point, i) = SeedSequence(entropy=spec.seed,
                                  spawn_key=(i, layout(point))).generate_state(2, uint32) -> 63 bits

with ``layout`` a 32-bit hash of the fields that decide which cells exist and how they are
laid out (crossbar rows/cols, bits per cell, weight bits, realisation). Fault rates, sigmas,
frequency or temperature are *not* in it: with the same instance index they threshold or scale
the same per-cell draws (coupled draws, :mod:`engine.nonideal.faults`), so accuracy-vs-rate
curves follow one growing fault set. Points with another cell layout get independent draws.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from engine import DRAW_SCHEME

from .hashing import digest as _digest
from .hashing import file_sha256
from .preflight import check_memory
from .preparation import model_key, offline_variants
from .spec import SpecError, SweepSpec, resolve_point

# Execution fields that change what a trial computes (read-noise draws depend on batching).
RESULT_EXECUTION_FIELDS = ("batch_size",)


# Fields added after point ids were first published, by section: left out of the hashed content while
# they hold their defaults, so a spec that does not use them keeps the id (and the rows) it had.
_ADDED_FIELDS = {
    "hardware": ("time_s", "drift", "read_fluctuation", "iv", "variation.sigma_poly_us", "variation.poly_g_max_ref_us"),
    "data": ("download",),
}


def result_content(spec: SweepSpec, weights: dict[str, str] | None = None) -> dict:
    """Everything in a point's spec that changes a trial's result (the point id hashes it).
    ``weights``: model key -> sha256 of the trained checkpoint (base model and offline variants),
    so rows computed with other weights (retrained elsewhere, another torch) never share an id."""
    d = spec.model_dump(mode="json", include={"seed", "kind", "model", "data", "hardware", "training"})
    for section, names in _ADDED_FIELDS.items():
        default = type(getattr(spec, section))().model_dump(mode="json")
        for name in names:  # dotted names reach into a sub-section
            *parents, leaf = name.split(".")
            held, ref = d[section], default
            for p in parents:
                held, ref = held.get(p, {}), ref.get(p, {})
            if held.get(leaf) == ref.get(leaf):
                held.pop(leaf, None)
    update = d["hardware"]["update"]
    if spec.kind != "train" or update["write_noise"] == 0:  # what a write is matters only for its noise
        update.pop("write_granularity", None)
    d["execution"] = {k: getattr(spec.execution, k) for k in RESULT_EXECUTION_FIELDS}
    d["draw_scheme"] = DRAW_SCHEME
    versions = {c.name: c.results_version for s in spec.strategies() for c in s.components if c.results_version > 1}
    if versions:  # only sweeps using a component whose numbers changed get new ids
        d["mitigation_versions"] = dict(sorted(versions.items()))
    if spec.model.checkpoint:
        d["model"]["checkpoint"] = file_sha256(spec.model.checkpoint)
    if weights:
        keys = [model_key(spec), *sorted(offline_variants(spec))]
        d["weights_sha256"] = {k: weights[k] for k in keys if k in weights}
    return d


def layout_key(spec: SweepSpec) -> int:
    hw = spec.hardware
    key = {
        "crossbar": hw.crossbar.model_dump(),
        "bits_per_cell": hw.device.bits_per_cell,
        "mapping": hw.mapping.model_dump(),
    }
    return int(_digest(key, 8), 16)


def instance_seed(sweep_seed: int, instance: int, layout: int) -> int:
    state = np.random.SeedSequence(entropy=sweep_seed, spawn_key=(instance, layout)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63


def _validated(pspec: SweepSpec, path: str, value: Any) -> Any:
    """An axis value as the validated spec holds it (YAML 1.1 reads ``2.6e6`` as a string; the field
    is a float), or as written where the path is an alias the spec normalises away (``sa0_rate``)."""
    node: Any = pspec
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif not isinstance(node, dict) and key in type(node).model_fields:
            node = getattr(node, key)
        else:
            return value
    return node if isinstance(node, (bool, int, float, str)) else value


def column_type(values: list[Any]) -> str:
    """Arrow type name of a swept parameter's column."""
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float64"
    return "string"


@dataclass(frozen=True)
class Point:
    index: int
    id: str
    params: dict[str, Any]
    spec: SweepSpec
    layout: int


@dataclass(frozen=True)
class Task:
    point_index: int
    trials: tuple[tuple[int, tuple[str, ...]], ...]  # (instance, mitigation labels to run)


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    raw: dict
    points: tuple[Point, ...]
    labels: tuple[str, ...]
    axis_types: dict[str, str]
    spec_hash: str

    @property
    def sweep_id(self) -> str:
        return f"{self.spec.name}-{self.spec_hash[:8]}"

    @property
    def instances(self) -> int:
        """Instances per point (the upper bound ``until.max`` for adaptive sweeps)."""
        return self.spec.trials.max_instances

    @property
    def rows_total(self) -> int:
        return len(self.points) * self.instances * len(self.labels)

    def seed(self, point: Point, instance: int) -> int:
        return instance_seed(self.spec.seed, instance, point.layout)

    @cached_property
    def by_id(self) -> dict[str, Point]:
        return {p.id: p for p in self.points}

    def keys(self) -> set[tuple[str, int, str]]:
        return {(p.id, i, m) for p in self.points for i in range(self.instances) for m in self.labels}

    def pending(self, done: set[tuple[str, int, str]]) -> list[Task]:
        """Tasks for every (point, instance, mitigation) not in ``done``, ``trials_per_task`` per task."""
        size = self.spec.execution.trials_per_task
        tasks = []
        for p in self.points:
            chunk: list[tuple[int, tuple[str, ...]]] = []
            for i in range(self.instances):
                missing = tuple(m for m in self.labels if (p.id, i, m) not in done)
                if missing:
                    chunk.append((i, missing))
                if len(chunk) == size:
                    tasks.append(Task(p.index, tuple(chunk)))
                    chunk = []
            if chunk:
                tasks.append(Task(p.index, tuple(chunk)))
        return tasks

    def describe(self) -> str:
        n_axes = len(self.axis_types)
        head = f"{len(self.points)} points ({n_axes} swept parameter{'s' * (n_axes != 1)})"
        until = self.spec.trials.until
        if until is not None:
            return (
                f"{head} x {until.min}..{until.max} instances (adaptive: until the 95% CI half-width of "
                f"{until.metric} <= {until.ci_halfwidth:g}) x {len(self.labels)} mitigations = "
                f"{len(self.points) * until.min * len(self.labels)}..{self.rows_total} rows"
            )
        return f"{head} x {self.instances} instances x {len(self.labels)} mitigations = {self.rows_total} rows"


def make_plan(spec: SweepSpec, raw: dict, weights: dict[str, str] | None = None, check: bool = True) -> Plan:
    """Expand the spec; every point is validated (an axis value out of range is a SpecError).
    ``weights`` (model key -> checkpoint sha256, known once models are trained or loaded) enter
    the point ids; without them the ids are those of the spec alone (``validate``). ``check``:
    also check every point's memory (builds the model's shapes: imports torch)."""
    factors = [[{k: v} for v in vals] for k, vals in spec.sweep.grid.items()]
    factors += [[dict(zip(group, combo)) for combo in zip(*group.values())] for group in spec.sweep.zip]
    points = []
    for index, combo in enumerate(itertools.product(*factors) if factors else [()]):
        values = {k: v for part in combo for k, v in part.items()}
        pspec = resolve_point(raw, values) if values else spec
        values = {k: _validated(pspec, k, v) for k, v in values.items()}
        points.append(Point(index, _digest(result_content(pspec, weights)), values, pspec, layout_key(pspec)))
    checked = set()
    for p in points if check else ():  # memory of one instance and of one tile's solve, per distinct model/hardware
        key = (p.spec.model.name, p.spec.data.model_dump_json(), p.spec.hardware.model_dump_json())
        if key not in checked:
            checked.add(key)
            check_memory(p.spec)
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise SpecError("sweep: two points resolve to the same spec (an axis repeats a value)")
    axis_types = {path: column_type([p.params[path] for p in points]) for path in spec.sweep.axes()}
    labels = spec.labels
    content = spec.model_dump(mode="json", exclude={"execution", "output"})
    content["execution"] = {k: getattr(spec.execution, k) for k in RESULT_EXECUTION_FIELDS}
    content["points"] = ids
    return Plan(spec, raw, tuple(points), labels, axis_types, _digest(content, 16))
