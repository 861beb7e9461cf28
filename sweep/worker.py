"""The trial worker: one per Ray actor. Holds model replicas (on its GPU when it has one), the
evaluation and calibration data, and the engine's calibrated crossbar twins for the whole sweep.
It knows the spec, not the scheduler: given (point values, [(instance, seed, mitigations)]) it
returns one result dict per (trial, mitigation)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from typing import Any

import torch

from engine import (
    TrialEvaluator,
    calibration_batches,
    fused_draws,
    load_dataset,
    loader,
    materialise,
    model_from_bytes,
    native_weight_ranges,
    steady_heap,
    subset,
    train_on_crossbar,
)

from .preparation import model_key
from .spec import SweepSpec, resolve_point


class TrialWorker:
    def __init__(self, raw: dict, cpus: float, gpus: float) -> None:
        torch.set_num_threads(max(1, int(cpus)))  # same arithmetic whatever the worker count
        fused_draws.set_policy(SweepSpec.model_validate(raw).execution.compile_draws)
        steady_heap()  # a trial alternates programming and forward passes: keep their pages (engine.heap)
        self.device = torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")
        self.raw = raw
        self.checkpoints: dict[str, Any] = {}
        self._points: dict[str, tuple] = {}
        self._evaluators: dict[tuple, TrialEvaluator] = {}
        self._data: dict[str, tuple] = {}
        self._weight_ranges: dict[str, list[float]] = {}
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _blob(self, key: str) -> bytes:
        blob = self.checkpoints[key]
        if not isinstance(blob, bytes):  # an ObjectRef shipped inside a dict
            import ray

            blob = ray.get(blob)
            self.checkpoints[key] = blob
        return blob

    def _evaluator(self, spec: SweepSpec) -> TrialEvaluator:
        key = (
            model_key(spec),
            spec.data.model_dump_json(),
            spec.execution.batch_size,
            spec.hardware.adc.calibration_batches,
        )
        ev = self._evaluators.get(key)
        if ev is None:
            d = spec.data
            split, test = self._dataset(spec)
            model = model_from_bytes(
                self._blob(key[0]), spec.model.name, split.in_channels, split.num_classes, split.input_size
            )
            test = torch.utils.data.TensorDataset(*(t.to(self.device) for t in test.tensors))
            calib = calibration_batches(split.train, d.calibration_size, spec.hardware.adc.calibration_batches)

            def train() -> tuple[torch.Tensor, torch.Tensor]:  # loaded only for re-training
                x, y = materialise(split.train).tensors
                return x, y

            budget = spec.execution.solve_memory_mb
            ev = TrialEvaluator(
                {None: model},
                loader(test, spec.execution.batch_size),
                calib,
                self.device,
                spec.model.keep_digital,
                train_data=train,
                base_key=key[0],
                solve_max_bytes=None if budget is None else int(budget * 2**20),
            )
            self._evaluators[key] = ev
        return ev

    def _dataset(self, spec: SweepSpec) -> tuple:
        """The data split and its fixed evaluation subset, loaded once per worker."""
        key = spec.data.model_dump_json()
        if key not in self._data:
            split = load_dataset(spec.data.name, spec.data.root, spec.data.input_size)
            self._data[key] = (split, materialise(subset(split.test, spec.data.eval_size)))
        return self._data[key]

    def _point(self, point_id: str, values: dict):
        if point_id not in self._points:
            spec = resolve_point(self.raw, values)
            self._points[point_id] = (spec, {s.label: s for s in spec.strategies()})
        return self._points[point_id]

    def _train_trial(self, spec: SweepSpec, instance: int, seed: int) -> dict:
        t = spec.training
        assert t is not None  # the spec validator requires it for kind: train
        split, test = self._dataset(spec)
        split = replace(split, test=test)
        # W_max per layer comes from the same recipe trained natively: one float run per recipe, not per trial
        recipe = f"{spec.model.name}|{spec.data.model_dump_json()}|{t.model_dump_json()}"
        if recipe not in self._weight_ranges:
            self._weight_ranges[recipe] = native_weight_ranges(
                spec.model.name, split, t.epochs, t.batch_size, t.lr, t.seed, t.momentum, self.device
            )
        start = time.perf_counter()
        res = train_on_crossbar(
            spec.model.name,
            split,
            spec.hardware,
            t.epochs,
            t.batch_size,
            t.lr,
            t.seed,
            seed,
            self.device,
            spec.execution.batch_size,
            t.momentum,
            self._weight_ranges[recipe],
        )
        return {
            "instance": instance,
            "instance_seed": seed,
            "mitigation": "train",
            "top1": res.top1,
            "top5": res.final.top5,
            "loss": res.final.loss,
            "count": res.final.count,
            "top1_per_epoch": res.top1_per_epoch,
            "t_sample_s": 0.0,
            "t_map_s": 0.0,
            "t_mitigate_s": time.perf_counter() - start,
            "t_evaluate_s": 0.0,
            "worker_host": self.host,
            "worker_pid": self.pid,
            "worker_device": str(self.device),
            "finished": time.time(),
        }

    def run(self, task: dict) -> list[dict]:
        if task.get("kind") == "train":
            spec, _ = self._point(task["point_id"], task["params"])
            return [self._train_trial(spec, i, seed) for i, seed, _labels in task["trials"]]
        self.checkpoints.setdefault(task["model_key"], task["checkpoint"])
        spec, strategies = self._point(task["point_id"], task["params"])
        ev = self._evaluator(spec)
        for key, ref in task.get("variants", {}).items():  # offline-trained model variants
            if key not in ev.models:
                self.checkpoints.setdefault(key, ref)
                ev.add_model(key, model_from_bytes(self._blob(key), spec.model.name, 0, 0, 0))
        out = []
        for instance, seed, labels in task["trials"]:
            for o in ev.run(spec.hardware, seed, [strategies[m] for m in labels]):
                out.append(
                    {
                        "instance": instance,
                        "instance_seed": seed,
                        "mitigation": o.mitigation,
                        "top1_per_epoch": None,
                        "top1": o.metrics.top1,
                        "top5": o.metrics.top5,
                        "loss": o.metrics.loss,
                        "count": o.metrics.count,
                        "t_sample_s": o.t_sample_s,
                        "t_map_s": o.t_map_s,
                        "t_mitigate_s": o.t_mitigate_s,
                        "t_evaluate_s": o.t_evaluate_s,
                        "solver_iterations": o.solver_iterations,
                        "worker_host": self.host,
                        "worker_pid": self.pid,
                        "worker_device": str(self.device),
                        "finished": time.time(),
                    }
                )
        return out
