"""Model preparation for a sweep: which trained network each point uses, the offline-trained
variants its mitigations need, and training them once - as Ray tasks with the workers' resources
(``cpus_per_worker`` threads, ``gpus_per_worker`` GPUs), not in the driver process.

Checkpoints are cached in the output (``models/``) by content hash and shipped to the workers
through the Ray object store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console

from .console import say
from .hashing import digest
from .results import ResultStore
from .spec import SweepSpec

if TYPE_CHECKING:
    from .plan import Plan


def model_key(spec: SweepSpec) -> str:
    """Which trained network a point uses (model section + the data it was trained on)."""
    return digest(
        {
            "model": spec.model.model_dump(mode="json"),
            "data": spec.data.model_dump(mode="json", include={"name", "root", "input_size"}),
        }
    )


def offline_variants(spec: SweepSpec) -> dict[str, Any]:
    """Model variants a point's strategies need that are trained offline: key -> component."""
    base = model_key(spec)
    out: dict[str, Any] = {}
    if spec.kind == "train":
        return out
    for strategy in spec.strategies():
        key, maker = strategy.variant(base, spec.hardware)
        if maker is not None and maker.offline:
            out[key] = maker
    return out


@contextlib.contextmanager
def deterministic(cpus: float) -> Iterator[None]:
    """Training reproducible from its recipe: ``cpus`` threads and torch's deterministic
    algorithms (restored afterwards: a Ray worker process may run other tasks)."""
    import torch

    threads, was = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, int(cpus)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was)


def train_base(raw_model: dict, raw_data: dict, cpus: float) -> tuple[bytes, float, float]:
    """Ray task: train the recipe of ``model``; returns (checkpoint bytes, test top-1, seconds)."""
    from engine import TrainConfig, load_dataset, train_recipe

    recipe = TrainConfig(**raw_model["train"])
    data = load_dataset(raw_data["name"], raw_data.get("root"), raw_data.get("input_size"))
    with deterministic(cpus):
        result, blob = train_recipe(data, raw_model["name"], recipe, raw_data["name"])
    return blob, result.test_top1, result.seconds


def train_variant(
    maker: Any,
    hardware: Any,
    raw_model: dict,
    raw_data: dict,
    calibration_size: int,
    base_blob: bytes,
    cpus: float,
    gpus: float,
) -> bytes:
    """Ray task: train the offline variant made by mitigation component ``maker`` from the base
    checkpoint, on the task's GPU when it has one."""
    import torch

    from engine import TrainConfig, calibration_batches, checkpoint_bytes, load_dataset, model_from_bytes

    split = load_dataset(raw_data["name"], raw_data.get("root"), raw_data.get("input_size"))
    device = torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")
    name = raw_model["name"]
    base = model_from_bytes(base_blob, name, split.in_channels, split.num_classes, split.input_size)
    recipe = TrainConfig(**raw_model["train"]) if raw_model.get("train") else TrainConfig()
    calib = [x.to(device) for x in calibration_batches(split.train, calibration_size, hardware.adc.calibration_batches)]
    with deterministic(cpus):
        model = maker.train_variant(base.to(device), split, hardware, recipe, calib)
    kwargs = {"in_channels": split.in_channels, "num_classes": split.num_classes, "input_size": split.input_size}
    return checkpoint_bytes(model, name, kwargs, {"variant": maker.label(), "device": device.type})


def _base_path(spec: SweepSpec, version: str) -> str:
    assert spec.model.train is not None  # only a model without a checkpoint is trained here
    recipe = spec.model.train.model_dump()
    return f"models/{spec.model.name}-{digest({'key': model_key(spec), 'recipe': recipe, 'version': version})}.pt"


def cached_checkpoints(plan: Plan, store: ResultStore, version: str) -> tuple[dict[str, bytes], bool]:
    """(checkpoints available without training: files and cached models, whether any must be trained)."""
    out: dict[str, bytes] = {}
    missing = False
    for point in plan.points:
        spec = point.spec
        if spec.kind == "train":
            continue
        key = model_key(spec)
        if key not in out:
            if spec.model.checkpoint:
                with open(spec.model.checkpoint, "rb") as f:
                    out[key] = f.read()
            elif store.exists(_base_path(spec, version)):
                out[key] = store.read_bytes(_base_path(spec, version))
            else:
                missing = True
        for vkey in offline_variants(spec):
            if vkey not in out:
                if store.exists(f"models/variant-{vkey}.pt"):
                    out[vkey] = store.read_bytes(f"models/variant-{vkey}.pt")
                else:
                    missing = True
    return out, missing


def prepare_checkpoints(
    plan: Plan, store: ResultStore, console: Console, version: str, ensure_ray=lambda: None
) -> dict[str, bytes]:
    """Checkpoint bytes per model key: base models (recipes trained once, cached by content hash)
    and the offline variants mitigations need (also cached by content hash). Training runs as
    Ray tasks (``ensure_ray()`` is called before the first)."""
    import ray

    ex = plan.spec.execution
    out: dict[str, bytes] = {}
    for point in plan.points:
        spec = point.spec
        if spec.kind == "train":  # trained from scratch inside each trial
            continue
        key = model_key(spec)
        if key in out:
            continue
        if spec.model.checkpoint:
            with open(spec.model.checkpoint, "rb") as f:
                out[key] = f.read()
            continue
        rel = _base_path(spec, version)
        if store.exists(rel):
            out[key] = store.read_bytes(rel)
            continue
        ensure_ray()
        assert spec.model.train is not None
        say(console, f"training {spec.model.name} on {spec.data.name} ({spec.model.train.epochs} epochs) -> {rel}")
        task = ray.remote(train_base).options(num_cpus=ex.cpus_per_worker, num_gpus=0)
        blob, top1, seconds = ray.get(
            task.remote(spec.model.model_dump(mode="json"), spec.data.model_dump(mode="json"), ex.cpus_per_worker)
        )
        say(console, f"trained: test top-1 {top1:.4f} in {seconds:.1f} s")
        store.write_bytes(rel, blob)
        out[key] = blob
    for point in plan.points:
        for key, maker in offline_variants(point.spec).items():
            if key in out:
                continue
            rel = f"models/variant-{key}.pt"
            if store.exists(rel):
                out[key] = store.read_bytes(rel)
                continue
            ensure_ray()
            say(console, f"training model variant {key} ({maker.label()}) as a Ray task")
            t = time.perf_counter()
            variant_task = ray.remote(train_variant).options(num_cpus=ex.cpus_per_worker, num_gpus=ex.gpus_per_worker)
            spec = point.spec
            variant_blob = ray.get(
                variant_task.remote(
                    maker,
                    spec.hardware,
                    spec.model.model_dump(mode="json"),
                    spec.data.model_dump(mode="json"),
                    spec.data.calibration_size,
                    out[model_key(spec)],
                    ex.cpus_per_worker,
                    ex.gpus_per_worker,
                )
            )
            say(console, f"trained {key} in {time.perf_counter() - t:.1f} s")
            store.write_bytes(rel, variant_blob)
            out[key] = variant_blob
    return out


def weight_digests(checkpoints: dict[str, bytes]) -> dict[str, str]:
    """model key -> digest of its checkpoint's architecture and weights (part of every point id)."""
    from engine import checkpoint_digest

    return {k: checkpoint_digest(v) for k, v in checkpoints.items()}
