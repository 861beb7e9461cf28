"""One trial = one hardware instance, every mitigation evaluated on it (common random numbers).

:class:`TrialEvaluator` is what a worker keeps for the whole sweep: the model (and its offline
variants), the evaluation and calibration data on the worker's device, and a cache of
calibrated crossbar twins keyed by (variant, mapping scheme, quantisation/tiling fields).
Changing only non-ideality parameters between points reuses a twin without recalibrating.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from .convert import CrossbarModel, convert
from .evaluate import Metrics, evaluate
from .hardware import HardwareSpec
from .mitigations import Strategy, TrialContext


@dataclass(frozen=True)
class Outcome:
    mitigation: str
    metrics: Metrics
    t_sample_s: float
    t_map_s: float
    t_mitigate_s: float
    t_evaluate_s: float


class TrialEvaluator:
    def __init__(self, models: dict[str | None, nn.Module], eval_loader: Iterable, calibration_inputs: list[torch.Tensor],
                 device: torch.device, keep_digital: Sequence[str] = (), train_loader: Iterable | None = None) -> None:
        self.models = {k: m.to(device).eval() for k, m in models.items()}
        self.eval_loader = eval_loader
        self.calibration_inputs = [x.to(device) for x in calibration_inputs]
        self.device = device
        self.keep_digital = tuple(keep_digital)
        self.train_loader = train_loader
        self._twins: dict[tuple, CrossbarModel] = {}

    def twin(self, variant: str | None, hw: HardwareSpec, strategy: Strategy) -> tuple[CrossbarModel, float]:
        """Calibrated crossbar twin for (variant, scheme, mapping fields); seconds spent mapping."""
        key = (variant, strategy.scheme, json.dumps(hw.mapping_key(), sort_keys=True))
        start = time.perf_counter()
        xm = self._twins.get(key)
        if xm is None:
            if variant not in self.models:
                raise KeyError(f"model variant {variant!r} is not loaded on this worker")
            xm = convert(self.models[variant], hw, self.keep_digital)
            xm.set_scheme(strategy.scheme)
            xm.calibrate(self.calibration_inputs)
            self._twins[key] = xm
        else:
            xm.set_hardware(hw)
        return xm, time.perf_counter() - start

    def run(self, hw: HardwareSpec, seed: int, strategies: Sequence[Strategy]) -> list[Outcome]:
        ctx = TrialContext(calibration_inputs=self.calibration_inputs, train_loader=self.train_loader, seed=seed)
        out = []
        for strategy in strategies:
            xm, t_map = self.twin(strategy.variant, hw, strategy)
            t0 = time.perf_counter()
            xm.program([seed])
            t1 = time.perf_counter()
            strategy.after_program(xm, ctx)
            t2 = time.perf_counter()
            metrics = evaluate(xm, self.eval_loader, seeds=None, reprogram=False)[0]
            t3 = time.perf_counter()
            out.append(Outcome(strategy.label, metrics, t1 - t0, t_map, t2 - t1, t3 - t2))
        return out
