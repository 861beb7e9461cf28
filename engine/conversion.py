"""Model conversion: replace every nn.Linear / nn.Conv2d by its crossbar twin.

BatchNorm, pooling, activations and layers named in ``keep_digital`` stay digital.
Crossbar layers are numbered in ``named_modules()`` order; that index keys their random
streams (:mod:`engine.seeding`), so it must not depend on anything but the architecture.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

import torch
from torch import nn

from .calibration import ColumnRange, InputRange, ReadObserver, SensedMoments
from .crossbar import CrossbarLayer, LayerFold, OutputStage
from .hardware import HardwareSpec
from .instance import HardwareInstance, LayerCells
from .layers import CrossbarConv2d, CrossbarLinear
from .mapping import Scheme
from .periphery import CodeScratch, RangeTracker
from .tiling import KernelFold

T = TypeVar("T")
M = TypeVar("M")


class CrossbarModel(nn.Module):
    """A network whose Linear/Conv2d layers run on sampled crossbar instances.

    ``forward(x)`` with x of shape (batch, ...) returns (instances, batch, ...): every
    programmed instance sees the same inputs.
    """

    def __init__(self, net: nn.Module, hw: HardwareSpec) -> None:
        super().__init__()
        self.net = net
        self.hw = hw
        self.eval()  # inference twin: BatchNorm uses its running statistics
        self._memo: dict[Hashable, Any] = {}  # per-twin data of mitigations (see memo)

    def crossbar_layers(self) -> list[CrossbarLayer]:
        """The crossbar layers in ``modules()`` order (depth first, each once), found without building
        the qualified names ``modules()`` makes (called several times per trial)."""
        return list(self._walk_layers())

    def _walk_layers(self) -> Iterator[CrossbarLayer]:
        seen: set[int] = set()
        stack = [self.net]
        while stack:
            m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            if isinstance(m, CrossbarLayer):
                yield m
            stack.extend(reversed([c for c in m._modules.values() if c is not None]))

    @property
    def n_instances(self) -> int:
        first = next(self._walk_layers(), None)  # every layer holds the same instances: stop at the first
        return first.n_instances if first is not None else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, b = self.n_instances, x.shape[0]
        if i > 1:
            x = x.unsqueeze(0).expand(i, *x.shape).reshape(i * b, *x.shape[1:])
        out = self.net(x)
        return out.reshape(i, b, *out.shape[1:])

    def newton_iterations(self) -> int | None:
        """Newton iterations of the slowest non-linear I-V network solve since programming (sinh I-V
        under exact IR drop), None when no layer solved one."""
        its = [r.iterations for layer in self.crossbar_layers() if (r := layer.newton_report) is not None]
        return max(its) if its else None

    def set_hardware(self, hw: HardwareSpec) -> None:
        """Change the hardware; calibration is kept only if quantisation and tiling are unchanged
        (equal hardware keeps everything, including the programmed instance)."""
        self.hw = hw
        for layer in self.crossbar_layers():
            layer.set_hardware(hw)

    def set_scheme(self, scheme: Scheme) -> None:
        for layer in self.crossbar_layers():
            layer.remap(scheme)

    def reset_mitigations(self) -> None:
        """Clear every per-strategy hook so the next strategy starts from direct mapping (the programmed
        state, read as the last strategy's stage said, is dropped: the next strategy programs its own)."""
        for layer in self.crossbar_layers():
            layer.release()
            layer.set_output_stage(OutputStage())
            layer.straight_through = False

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` once per twin and ``key``: what a mitigation keeps between trials (offline
        statistics, the trained state every trial starts from). Keys are the component itself or its
        class, so two components never share an entry by accident."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def batchnorms(self) -> dict[str, nn.modules.batchnorm._BatchNorm]:
        """The network's BatchNorm modules by name (digital layers; FPT recalibrates them)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

    def load_batchnorm(self, states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Set BatchNorm statistics, {module name: state dict} (a mitigation's ``BatchNormStats``)."""
        modules = _known(self.batchnorms(), states, "BatchNorm statistics")
        for name, state in states.items():
            modules[name].load_state_dict(state)

    @contextlib.contextmanager
    def substituted(self, modules: Mapping[str, nn.Module]) -> Iterator[None]:
        """Run with some submodules replaced by others ({name: module}), restored on exit: a
        mitigation reads the twin through its own copies instead of writing the twin's modules."""
        originals = {name: self.get_submodule(name) for name in modules}
        try:
            for name, module in modules.items():
                self.set_submodule(name, module)
            yield
        finally:
            for name, module in originals.items():
                self.set_submodule(name, module)

    @property
    def instance(self) -> HardwareInstance | None:
        """The sampled instance the layers are programmed with (None: nothing or the ideal crossbar)."""
        layers = self.crossbar_layers()
        cells = layers[0].cells if layers else None
        return None if cells is None else cells.instance

    def load_weights(self, state: Mapping[str, torch.Tensor], reuse_ir_distortion: bool = False) -> None:
        """Load float weights, {state-dict name: tensor} (a mitigation's ``Weights``), and map every
        layer again; an instance already programmed is programmed again with the new targets on the same
        physical draws (``reuse_ir_distortion``: see :meth:`program`)."""
        known = _known(self.state_dict(keep_vars=True), state, "weights", "entries")
        instance = self.instance
        with torch.no_grad():
            for name, value in state.items():
                known[name].copy_(value)
        for layer in self.crossbar_layers():
            layer.remap()
        if instance is not None:
            self.program(instance, reuse_ir_distortion)

    def program_cells(self, cells: Mapping[str, LayerCells]) -> None:
        """Program given states, {layer name: LayerCells} (a mitigation's :class:`Reprogram`)."""
        layers = _known({layer.name: layer for layer in self.crossbar_layers()}, cells, "programmed states")
        for name, state in cells.items():
            layers[name].program_cells(state)

    @contextlib.contextmanager
    def straight_through(self) -> Iterator[None]:
        """Within: the crossbar's output forward, the float layers' gradient back (RxNN Sec. VI)."""
        layers = self.crossbar_layers()
        for layer in layers:
            layer.straight_through = True
        try:
            yield
        finally:
            for layer in layers:
                layer.straight_through = False

    def set_output_stage(self, update: Mapping[str, Mapping[str, Any]]) -> None:
        """Apply a mitigation's output transforms, {layer name: {OutputStage field: value}}, on top of
        what earlier components of the strategy set."""
        layers = _known({layer.name: layer for layer in self.crossbar_layers()}, update, "output stage")
        for name, fields in update.items():
            layers[name].set_output_stage(replace(layers[name].output_stage, **fields))

    @torch.no_grad()
    def sensed_moments(self, inputs: Iterable[torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Per layer and weight slice, over ``inputs`` on the ideal crossbar: means, variances and
        covariance of the sensed column currents J and their ADC outputs q (engine units)."""
        try:
            with self.observing(SensedMoments) as seen:
                self.program(None)  # programmed while observed: the tiled read (never folded)
                for x in inputs:
                    self.net(x)
            out = {}
            for layer in self.crossbar_layers():
                sj, sjj, sq, sqq, sjq, n = (sum(s[i] for s in seen[layer.name].records) for i in range(6))
                mj, mq = sj / n, sq / n
                out[layer.name] = {
                    "mean_j": mj,
                    "var_j": (sjj / n - mj**2).clamp_min(0.0),
                    "mean_q": mq,
                    "var_q": (sqq / n - mq**2).clamp_min(0.0),
                    "cov_jq": sjq / n - mj * mq,
                }
        finally:
            self.program(None)
        return out

    def program(
        self, instance: HardwareInstance | Sequence[int] | None, reuse_ir_distortion: bool = False
    ) -> HardwareInstance | None:
        """Program a sampled instance on every layer: a :class:`HardwareInstance` (shared by every
        strategy of a trial), seeds (a new instance of this model's hardware) or ``None`` (the
        ideal crossbar). Returns the instance programmed. ``reuse_ir_distortion``: G_eff from the
        last exact solve's distortion instead of a new solve (TxSim's interpolated FCM)."""
        if instance is not None and not isinstance(instance, HardwareInstance):
            instance = HardwareInstance(instance, self.hw)
        layers = self.crossbar_layers()
        kernels: dict[int, tuple[LayerFold, torch.Tensor]] = {}
        if instance is not None and layers:  # every layer's static draws and programming in one pass
            levels = [(la.layer_index, la.target_levels()) for la in layers]
            device = levels[0][1].device
            found: dict[int, LayerFold] = {}

            def folds() -> dict[int, tuple[KernelFold, float]]:  # asked only where the compiled pass runs
                found.update((la.layer_index, f) for la in layers if (f := la.kernel_fold(device)) is not None)
                return {li: (f.fold, f.scale) for li, f in found.items()}

            weights = instance.program_all(levels, folds)  # with the folded kernel weights it wrote
            kernels = {li: (found[li], w) for li, w in weights.items()}
        for layer in layers:
            layer.program(instance, reuse_ir_distortion, kernels.get(layer.layer_index))
        return instance

    def release(self) -> None:
        """Drop every layer's programmed state (its instance's cells, G_eff and read operands)."""
        for layer in self.crossbar_layers():
            layer.release()

    def set_solve_budget(self, max_bytes: int | None) -> None:
        """Memory budget of one exact IR-drop solve (None: a quarter of the device's free memory)."""
        for layer in self.crossbar_layers():
            layer.solve_max_bytes = max_bytes

    def reset_read_noise(self) -> None:
        for layer in self.crossbar_layers():
            layer.reset_read_noise()

    @contextlib.contextmanager
    def observing(self, kind: type[ReadObserver]) -> Iterator[dict[str, ReadObserver]]:
        """Attach a fresh observer of ``kind`` to every crossbar layer for one calibration pass
        (engine.calibration); yields them by layer name, detached on exit."""
        seen = {layer.name: kind() for layer in self.crossbar_layers()}
        for layer in self.crossbar_layers():
            layer.observer = seen[layer.name]
        try:
            yield seen
        finally:
            for layer in self.crossbar_layers():
                layer.observer = None

    @torch.no_grad()
    def calibrate(self, inputs: Iterable[torch.Tensor]) -> None:
        """Per-layer DAC and ADC ranges, PytorX Alg. 1 (mean of per-batch maxima).

        With several weight slices, ``range_scope: layer`` takes Alg. 1 literally: each batch's
        max|I| over every column of every slice, averaged over batches (not the largest of the
        per-slice batch means, which is smaller when different batches peak in different slices);
        ``slice`` averages each slice's per-batch maxima separately.

        DAC: dx from the float network's layer inputs. ADC: dI from the ideal crossbar's sensed
        column currents (fault-free, noise-free, ideal ADC while recording). The ranges are a
        design-time property: every instance sampled later uses them.
        """
        batches = [x for _, x in zip(range(self.hw.adc.calibration_batches), inputs)]
        if not batches:
            raise ValueError("calibrate() needs at least one input batch")
        layers = self.crossbar_layers()
        was_training = self.training
        self.eval()
        with self.observing(InputRange) as seen:
            for x in batches:
                self.net(x)
        for layer in layers:
            tracker = RangeTracker(layer.coding.bits)
            for max_abs, minimum in seen[layer.name].records:
                tracker.observe(max_abs, minimum)
            layer.x_signed.fill_(tracker.signed)
            layer.delta_x.fill_(tracker.fitted_step())
        if self.hw.adc.kind == "quantized":  # range (unless given) and sign of every column's current
            with self.observing(ColumnRange) as seen:
                self.program(None)  # programmed while observed: the tiled read (never folded)
                for x in batches:
                    self.net(x)
            for layer in layers:
                records = seen[layer.name].records
                layer.adc_signed.fill_(min(s[1] for s in records) < 0)
                per_batch = torch.stack([s[0] for s in records])  # (batches, slices) max|I|
                if self.hw.adc.range_scope == "layer":  # Alg. 1: the batch mean of each batch's max over all columns
                    per_batch = per_batch.amax(1, keepdim=True).expand_as(per_batch)
                layer.adc_max_abs = per_batch.mean(0).to(layer.adc_max_abs.device)
        self.program(None)
        self.train(was_training)


def _known(modules: Mapping[str, M], update: Mapping[str, Any], what: str, kind: str = "layers") -> Mapping[str, M]:
    """``modules`` once every name ``update`` addresses is among them (else a KeyError naming the rest)."""
    unknown = set(update) - set(modules)
    if unknown:
        raise KeyError(f"{what} for unknown {kind} {sorted(unknown)}")
    return modules


def convertible_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def convert(model: nn.Module, hw: HardwareSpec, keep_digital: Iterable[str] = ()) -> CrossbarModel:
    """Deep-copy ``model`` and replace its Linear/Conv2d layers by crossbar layers.

    ``keep_digital``: layer names to keep in floating point; ``"first"`` and ``"last"`` name
    the first and last convertible layer.
    """
    net = copy.deepcopy(model).eval()
    names = convertible_layer_names(net)
    keep = set()
    for name in keep_digital:
        if name == "first" and names:
            keep.add(names[0])
        elif name == "last" and names:
            keep.add(names[-1])
        elif name in names:
            keep.add(name)
        else:
            raise ValueError(f"keep_digital: no Linear/Conv2d layer named {name!r}; layers are {names}")
    index = 0
    scratch = CodeScratch()  # the layers read one after another: one buffer for every layer's input codes
    for name in names:
        if name in keep:
            continue
        mod = net.get_submodule(name)
        new = (
            CrossbarConv2d.from_module(mod, hw, name, index)
            if isinstance(mod, nn.Conv2d)
            else CrossbarLinear.from_module(cast(nn.Linear, mod), hw, name, index)
        )
        new.code_scratch = scratch
        net.set_submodule(name, new)
        index += 1
    return CrossbarModel(net, hw)
