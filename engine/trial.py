"""One trial = one hardware instance, every mitigation evaluated on it (common random numbers).

:class:`TrialEvaluator` is what a worker keeps for the whole sweep: the model and its variants,
the evaluation, calibration (and, for re-training, training) data on the worker's device, and a
cache of calibrated crossbar twins keyed by (variant, mapping scheme, quantisation/tiling
fields). Changing only non-ideality parameters between points reuses a twin without
recalibrating. A trial samples one :class:`engine.instance.HardwareInstance`; every strategy
programs that same instance: its static draws are made once per layer and each distinct programmed
state is solved for IR drop once (strategies that only read share the solve). Per strategy:
prepare (before programming), program the instance, the per-instance step, evaluate - each timed
(the first strategy's programming time includes the sampling and the solves).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .catalog import Scheme
from .conversion import CrossbarModel, convert
from .evaluation import Metrics, evaluate
from .hardware import HardwareSpec
from .instance import HardwareInstance
from .mitigations import Strategy, TrialContext


@dataclass(frozen=True)
class Outcome:
    mitigation: str
    metrics: Metrics
    t_sample_s: float
    t_map_s: float
    t_mitigate_s: float
    t_evaluate_s: float
    solver_iterations: int | None = None  # Newton iterations of the non-linear I-V network solve (sinh + IR drop)


class TrialEvaluator:
    def __init__(
        self,
        models: dict[str | None, nn.Module],
        eval_loader: Iterable,
        calibration_inputs: list[torch.Tensor],
        device: torch.device,
        keep_digital: Sequence[str] = (),
        train_data: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
        base_key: str = "base",
        solve_max_bytes: int | None = None,
    ) -> None:
        self.models = {k: m.to(device).eval() for k, m in models.items()}
        self.eval_loader = eval_loader
        self.calibration_inputs = [x.to(device) for x in calibration_inputs]
        self.device = device
        self.keep_digital = tuple(keep_digital)
        self.base_key = base_key
        self.solve_max_bytes = solve_max_bytes
        self._train_data = train_data
        self._train_cache: tuple | None = None
        self._twins: dict[tuple, CrossbarModel] = {}
        self.last_stats: dict[str, int] = {}  # draws, programs and solves of the last trial's chip

    def add_model(self, key: str, model: nn.Module) -> None:
        self.models[key] = model.to(self.device).eval()

    def context(self, seed: int, needs_train: bool) -> TrialContext:
        if needs_train and self._train_cache is None and self._train_data is not None:
            self._train_cache = tuple(t.to(self.device) for t in self._train_data())
        return TrialContext(calibration_inputs=self.calibration_inputs, train_loader=self._train_cache, seed=seed)

    def model_for(self, strategy: Strategy, hw: HardwareSpec, ctx: TrialContext) -> tuple[str | None, nn.Module]:
        key, maker = strategy.variant(self.base_key, hw)
        if key is None:
            return None, self.models[None]
        if key not in self.models:
            assert maker is not None  # a variant key always comes with the component that makes it
            if maker.offline:
                raise KeyError(f"model variant {key!r} ({maker.name}) was not provided to this worker")
            self.add_model(key, maker.derive(self.models[None], ctx))
        return key, self.models[key]

    def twin(self, key: str | None, model: nn.Module, hw: HardwareSpec, scheme: Scheme) -> tuple[CrossbarModel, float]:
        """Calibrated crossbar twin for (variant, scheme, mapping fields); seconds spent mapping."""
        cache_key = (key, scheme, json.dumps(hw.mapping_key(), sort_keys=True))
        start = time.perf_counter()
        xm = self._twins.get(cache_key)
        if xm is None:
            xm = convert(model, hw, self.keep_digital)
            xm.set_solve_budget(self.solve_max_bytes)
            xm.set_scheme(scheme)
            xm.calibrate(self.calibration_inputs)
            self._twins[cache_key] = xm
        else:
            xm.set_hardware(hw)
        return xm, time.perf_counter() - start

    def _group(self, strategy: Strategy, hw: HardwareSpec) -> tuple:
        """Strategies that program the same targets run next to each other, so the instance's
        small cache of programmed states and solves serves them all (results do not depend on the
        order: every strategy starts from the same instance and resets its twin)."""
        key, _ = strategy.variant(self.base_key, hw)
        remaps = any(c.name.startswith("row_") for c in strategy.components)
        return (key or "", strategy.scheme, remaps)

    def run(self, hw: HardwareSpec, seed: int, strategies: Sequence[Strategy]) -> list[Outcome]:
        for twin in self._twins.values():  # the previous trial's chip is let go before the next is drawn
            twin.release()
        instance = HardwareInstance([seed], hw)  # one chip for every strategy of the trial
        order = sorted(range(len(strategies)), key=lambda i: self._group(strategies[i], hw))
        done: dict[int, Outcome] = {}
        for index in order:
            strategy = strategies[index]
            ctx = self.context(seed, any(c.name == "retrain" for c in strategy.components))
            key, model = self.model_for(strategy, hw, ctx)
            xm, t_map = self.twin(key, model, hw, strategy.scheme)
            xm.reset_mitigations()
            t0 = time.perf_counter()
            strategy.prepare(xm, ctx)
            t1 = time.perf_counter()
            xm.program(instance)
            t2 = time.perf_counter()
            strategy.after_program(xm, ctx)
            t3 = time.perf_counter()
            metrics = evaluate(xm, self.eval_loader, seeds=None, reprogram=False)[0]
            t4 = time.perf_counter()
            done[index] = Outcome(
                strategy.label, metrics, t2 - t1, t_map, (t1 - t0) + (t3 - t2), t4 - t3, xm.newton_iterations()
            )
        self.last_stats = dict(instance.stats)
        return [done[i] for i in range(len(strategies))]
