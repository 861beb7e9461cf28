"""Tiled non-ideal crossbar matrix-vector multiplication (PytorX eq. 5-11, Yu eq. 3).

:class:`CrossbarLayer` holds one layer's float weight, its mapping on tiles and, once
programmed, one or more sampled hardware instances. A read of one tile is

    currents = v @ G_eff                                     (the IR-drop seam)

with v the DAC voltages of one input chunk (units of dV_DAC) and G_eff the tile's effective
conductance (units of dG): the programmed conductance, or with wire / sense / driver resistance
the exact network's G_eff per tile (RxNN Sec. V-B, :mod:`engine.irdrop`). The network phase
(:mod:`engine.nonideal.network`) is chosen at programming: with the sinh cell I-V
(:mod:`engine.nonideal.iv`) v becomes V_0 sinh(v / V_0) without wires, and with exact IR drop the read
is no longer linear and each input vector's bit-line currents come from a Newton network solve; a
loaded DAC (RxNN Fig. 4) drives each array tile row with its own sagging voltages.
Then, per read: thermal/shot and telegraph noise per bit line, sensing (analog I+ - I- or
I - I_ref, or digital), column AWGN, the column ADC, digital subtraction, shift-and-add over
weight slices and input chunks, and the digital sum of the row tiles' partial sums.

Instances are a leading tensor dimension: the layer's input batch is instance-major,
(instances * batch, ...). No Python loops over tiles, cells, bits or instances; the only loop
over instances draws per-read noise from each instance's own generator.

When the read is linear (ideal ADC, no per-read noise) the tiles fold exactly into one
effective weight per instance, W_eff = sum over slices 2**(b s) sense(G_eff), and the layer
runs the native matmul/convolution kernel on the input codes (:class:`engine.reads.FoldedRead`).

The layer keeps its geometry, fitted calibration buffers and the read's layout hooks; what it has
programmed is an immutable :class:`engine.programming.ProgrammedState` built by one pure function,
with the read path (:mod:`engine.reads`) chosen there once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import irdrop
from .calibration import ReadObserver
from .hardware import HardwareSpec, spec_edits
from .instance import HardwareInstance, LayerCells, ideal_cells
from .mapping import MappedWeights, Scheme, map_weights
from .nonideal import NETWORK_EFFECTS, NetworkEffect
from .nonideal.iv import NewtonReport
from .periphery import ADC, CodeScratch, InputCoding
from .programming import (
    ProgrammedState,
    ReadPlan,
    ReadSetup,
    effect_registries,
    program_state,
    read_noise_streams,
    to_logical,
)
from .reads import FoldedRead
from .tile_ops import ConvTiles, MatmulTiles
from .tiling import READ_LAYOUT, KernelFold, TileGrid, sense


@dataclass(frozen=True)
class OutputStage:
    """The digital output transforms of one layer, an immutable value. Mitigations return the fields
    they set (``engine.mitigations.base.StageUpdate``); the strategy applies them through
    :meth:`engine.conversion.CrossbarModel.set_output_stage`, so no mitigation writes the layer."""

    mmse: tuple[torch.Tensor, torch.Tensor] | None = None  # per slice (a, (1-a) E[J]), Yu eq. 4
    zero_outputs: torch.Tensor | None = None  # (groups * n,) bool, Yu eq. 11 (folded in at programming)
    gain: torch.Tensor | None = None  # (I, groups * n) digital gain of the outputs (drift_comp)


@dataclass(frozen=True)
class LayerFold:
    """A layer's kernel fold for the programming of a sampled instance (:meth:`CrossbarLayer.kernel_fold`):
    the fold, its dx dw scale and the read plan it was found under (the cells' plan)."""

    fold: KernelFold
    scale: float
    plan: ReadPlan


@dataclass(frozen=True)
class FittedScalars:
    """Host copies of a layer's calibrated scalars (what programming and the ADC read of them)."""

    delta_x: float  # the DAC step
    x_signed: bool  # the input code is signed
    adc_signed: bool  # the column ADC is signed
    adc_calibrated: bool  # the ADC range buffer holds a fitted range (no NaN)


_FITTED_BUFFERS = ("delta_x", "x_signed", "adc_signed", "adc_max_abs")  # the calibration buffers


class CrossbarLayer(nn.Module):
    """Base class: a (groups, k, n) weight matrix on crossbar tiles. Subclasses reshape I/O."""

    # calibration buffers (registered in __init__; they move with the layer and live in its state dict)
    delta_x: torch.Tensor
    x_signed: torch.Tensor
    adc_max_abs: torch.Tensor
    adc_signed: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        groups: int,
        k: int,
        n: int,
        hw: HardwareSpec,
        name: str,
        layer_index: int,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.name = name
        self.layer_index = layer_index
        self.groups, self.k, self.n = groups, k, n
        self.observer: ReadObserver | None = None  # a calibration pass's recorder (engine.calibration)
        self.scheme: Scheme = "direct"
        self.allow_fold = True  # False forces the tiled read even when it is linear (for checks)
        # a column ADC fitted to each read's values (crossbar training, PytorX Alg. 1); None: the calibrated ADC
        self.fit_adc: Callable[[torch.Tensor], ADC] | None = None
        # digital output transforms, set only through CrossbarModel.set_output_stage (reset per strategy)
        self.output_stage = OutputStage()
        self.straight_through = False  # crossbar forward, float backward (RxNN Sec. VI; CrossbarModel.straight_through)
        self._ir_solution: tuple[torch.Tensor, torch.Tensor] | None = None  # (G, G_eff) of the last exact solve
        self.solve_max_bytes: int | None = None  # memory budget of one exact IR-drop solve (None: from free memory)
        dev = weight.device  # buffers live with the weight (never on the default device)
        self.register_buffer("delta_x", torch.tensor(0.0, dtype=torch.float64, device=dev))
        self.register_buffer("x_signed", torch.tensor(False, device=dev))
        self.register_buffer("adc_max_abs", torch.full((hw.slices,), float("nan"), dtype=torch.float64, device=dev))
        self.register_buffer("adc_signed", torch.tensor(True, device=dev))
        self._fitted: tuple[tuple[tuple[torch.Tensor, int], ...], FittedScalars] | None = None  # see `fitted`
        self._mapped: MappedWeights | None = None
        self._prog: ProgrammedState | None = None
        # (objects compared by identity, {values compared by equality: plan}): see read_plan
        self._read_plan: tuple[tuple, dict[tuple, ReadPlan]] | None = None
        self._levels: tuple[MappedWeights, TileGrid, torch.Tensor] | None = None  # placed target levels
        self.code_scratch = CodeScratch()  # where reads write their input codes (shared by a converted model's layers)
        self.set_hardware(hw)

    # Configuration ---------------------------------------------------------------------------
    def set_hardware(self, hw: HardwareSpec) -> None:
        old = getattr(self, "hw", None)
        if old is not None and old == hw:
            return  # the same hardware by value: keep the programmed state and every cache
        self.hw = hw
        self.grid = TileGrid.for_layer(hw, self.groups, self.k, self.n)
        if old is None or old.mapping_key() != hw.mapping_key():
            self._mapped = None
            if old is not None:  # new quantisation or tiling: the old ranges no longer apply
                self.delta_x.zero_()
                self.adc_max_abs = torch.full(
                    (hw.slices,), float("nan"), dtype=torch.float64, device=self.adc_max_abs.device
                )
        self._prog = None

    def weight_matrix(self) -> torch.Tensor:
        """The float weight as (groups, k, n) with y_g = x_g @ W_g."""
        raise NotImplementedError

    @property
    def fitted(self) -> FittedScalars:
        """The calibrated scalars on the host, copied from the device in one transfer only when one of
        their buffers changed (another tensor, or written in place: its version counter moved), so
        programming an instance makes no device-to-host round trip (a stall per layer on a GPU)."""
        held = self._fitted
        if held is None or not self._fitted_current(held[0]):
            as64 = [t.to(torch.float64) for t in (self.delta_x, self.x_signed, self.adc_signed)]
            values = torch.stack([*as64, torch.isnan(self.adc_max_abs).any().to(torch.float64)]).tolist()
            scalars = FittedScalars(values[0], bool(values[1]), bool(values[2]), not bool(values[3]))
            held = self._fitted = (self._fitted_key(), scalars)
        return held[1]

    def _fitted_key(self) -> tuple[tuple[torch.Tensor, int], ...]:
        """Each calibration buffer with its in-place version. The key holds the tensors themselves, so
        a replaced buffer is never mistaken for a new one allocated at its address."""
        buffers = self._buffers  # read directly: Module.__getattr__ costs ~1 us a name, several times a trial
        return tuple((b, b._version) for b in (buffers[name] for name in _FITTED_BUFFERS) if b is not None)

    def _fitted_current(self, key: tuple[tuple[torch.Tensor, int], ...]) -> bool:
        buffers = self._buffers
        return len(key) == len(_FITTED_BUFFERS) and all(
            buffers[name] is t and t._version == v for name, (t, v) in zip(_FITTED_BUFFERS, key)
        )

    def set_signs(self, *, x_signed: bool | None = None, adc_signed: bool | None = None) -> None:
        """Set the input code's and the column ADC's signs from values known on the host (crossbar
        training fits them per batch): a buffer is written only when its sign changes, and the host
        copy follows without reading the device."""
        fitted = self.fitted
        changes = {
            name: value
            for name, value in (("x_signed", x_signed), ("adc_signed", adc_signed))
            if value is not None and getattr(fitted, name) != value
        }
        for name, value in changes.items():
            getattr(self, name).fill_(value)
        if changes:
            self._fitted = (self._fitted_key(), replace(fitted, **changes))

    @property
    def coding(self) -> InputCoding:
        ip = self.hw.input
        return InputCoding(ip.input_bits, ip.dac_bits, self.fitted.x_signed)

    @property
    def delta_v_v(self) -> float:
        """DAC step of this layer in volts: the largest chunk magnitude drives v_read_v."""
        return self._delta_v_v(self.coding)

    def _delta_v_v(self, coding: InputCoding) -> float:
        return self.hw.input.v_read_v / coding.max_chunk

    @property
    def mapped(self) -> MappedWeights:
        if self._mapped is None:
            self._mapped = map_weights(self.weight_matrix(), self.hw, self.scheme)
        return self._mapped

    def target_levels(self) -> torch.Tensor:
        """Ideal cell levels (float32, integer-valued), (arrays, groups, t_r, t_c, rows, cols); placed
        once per mapping and grid (read-only: every instance starts from it)."""
        m, cached = self.mapped, self._levels
        if cached is None or cached[0] is not m or cached[1] != self.grid:
            if m.digits is None:  # placed before on another grid: map again
                self._mapped = None
                m = self.mapped
            assert m.digits is not None  # a fresh mapping holds its digits
            levels = self.grid.place(m.digits, m.reference).to(torch.float32)
            self._mapped = m = replace(m, digits=None)  # the digits live on as the placed levels only
            cached = self._levels = (m, self.grid, levels)
        return cached[2]

    def remap(self, scheme: Scheme | None = None) -> None:
        """Re-quantise and re-map after the weight or the mapping scheme changed."""
        if scheme is not None:
            self.scheme = scheme
        self._mapped = None
        self._prog = None

    @property
    def state(self) -> ProgrammedState:
        """The programmed state (engine.programming); reading an unprogrammed layer is an error."""
        if self._prog is None:
            raise RuntimeError(f"layer {self.name}: nothing is programmed; call program() first")
        return self._prog

    @property
    def cells(self) -> LayerCells | None:
        return None if self._prog is None else self._prog.cells

    @property
    def n_instances(self) -> int:
        return 1 if self._prog is None else self._prog.cells.n_instances

    @property
    def adc(self) -> ADC | None:
        """The column ADC from the calibrated range, on the layer's device."""
        a = self.hw.adc
        if a.kind == "ideal":
            return None
        dev = self.adc_max_abs.device
        fitted = self.fitted
        if a.full_scale_a is not None:  # given range; the sign still comes from calibration
            given = a.full_scale_a / (self.hw.device.delta_g_s * self.delta_v_v)
            return ADC.calibrated(a.bits, torch.full((1,), given, device=dev), signed=fitted.adc_signed)
        if not fitted.adc_calibrated:
            raise RuntimeError(f"layer {self.name}: ADC range not calibrated; call calibrate() first")
        max_abs = self.adc_max_abs if a.range_scope == "slice" else self.adc_max_abs.max().reshape(1)
        return ADC.calibrated(a.bits, max_abs, fitted.adc_signed)

    def _apply(self, fn, recurse: bool = True):
        """Moving the layer (``.to(device)``) moves its parameters and calibration buffers; the
        derived state (mapping, placed levels, programmed cells, tile index tables) is rebuilt on
        the new device when next needed."""
        out = super()._apply(fn, recurse)
        self.drop_derived()
        return out

    def release(self) -> None:
        """Drop the programmed state (an instance's cells, G_eff, read operands) and the last solve."""
        self._prog, self._ir_solution = None, None

    def drop_derived(self) -> None:
        """Forget every derived value (mapping, placed levels, programmed state, the last IR-drop
        solve); subclasses add theirs. Rebuilt when next needed."""
        self._mapped, self._levels, self._prog, self._ir_solution = None, None, None, None
        self._read_plan = None

    # Programming -----------------------------------------------------------------------------
    def program(
        self,
        instance: HardwareInstance | list[int] | tuple[int, ...] | None,
        reuse_ir_distortion: bool = False,
        kernel: tuple[LayerFold, torch.Tensor] | None = None,
    ) -> None:
        """Program a sampled instance (``None``: the ideal crossbar, no read noise). A list of
        seeds samples a new :class:`HardwareInstance` of this layer's hardware.
        ``reuse_ir_distortion``: TxSim's interpolated FCM, G_eff = G (1 - D) with D from the last
        exact solve (re-training between its solves). ``kernel``: this programming's
        :meth:`kernel_fold` and the kernel weight it gave, written with the instance's cells
        (:meth:`engine.instance.HardwareInstance.program_all`)."""
        levels = self.target_levels()
        if instance is None:
            self.program_cells(ideal_cells(levels))
            return
        if not isinstance(instance, HardwareInstance):
            instance = HardwareInstance(instance, self.hw)
        elif instance.hw is not self.hw and instance.hw != self.hw:
            raise ValueError(f"layer {self.name}: the instance was sampled for other hardware than the layer's")
        cells = instance.cells(levels, self.layer_index)
        if kernel is None:
            self.program_cells(cells, reuse_ir_distortion)
            return
        fold, weight = kernel
        self.program_cells(cells, reuse_ir_distortion, plan=fold.plan)
        self.state.seed_kernel_weight(fold.scale, weight)

    def kernel_fold(self, device: torch.device) -> LayerFold | None:
        """How a sampled instance's programming on ``device`` may also write this layer's kernel
        weight (:class:`LayerFold`): where the read is folded, sensed differentially from one slice,
        with no output gain or zeroed outputs, and no network effect changes G_eff; else None."""
        if not KernelFold.fits(self.grid) or self.output_gain is not None or self._g_eff_effects(True):
            return None
        plan = self._plan(True, device)
        if not isinstance(plan.path, FoldedRead) or plan.setup.zero_outputs is not None:
            return None
        native, n_major = self.kernel_layout()
        return LayerFold(KernelFold(self.grid, native, n_major), plan.setup.delta_x * self.mapped.delta_w, plan)

    def kernel_layout(self) -> tuple[tuple[int, ...], bool]:
        """The folded kernel weight's shape for one instance, and whether it holds W_g as (n, k)
        (:meth:`native_layout`)."""
        raise NotImplementedError

    def tile_operator(self, cell_draws: bool) -> MatmulTiles | ConvTiles:
        """How reads meet tiles; ``cell_draws``: per-cell per-read draws are needed."""
        raise NotImplementedError

    def program_cells(
        self,
        cells: LayerCells,
        reuse_ir_distortion: bool = False,
        read_streams: list[torch.Generator] | None = None,
        plan: ReadPlan | None = None,
    ) -> None:
        """Program given cells (a mitigation may have edited them) and precompute read operands
        (``reuse_ir_distortion``: see :meth:`program`). ``read_streams``: per-instance generators the
        per-read noise continues from (crossbar training re-programs after every update; default: the
        instances' streams from their start). ``plan``: :meth:`read_plan` of ``cells`` where the
        caller has just found it."""
        plan = plan or self.read_plan(cells)
        if plan.network.solved and cells.row_source is not None:
            raise ValueError(
                f"layer {self.name}: row remapping is not modelled with iv.model: sinh under exact IR "
                f"drop (the network is solved on physical rows)"
            )
        prev = self._prog
        if plan.network.solved:
            h_eff = cells.h  # the wires enter each read's solve
        elif (
            prev is not None
            and prev.cells.h is cells.h
            and prev.cells.row_source is cells.row_source
            and prev.cells.row_flipped is cells.row_flipped
        ):
            h_eff = prev.h_eff  # the same cells re-programmed (e.g. with a correction): no new IR-drop solve
        else:
            h_eff = to_logical(self.effective_conductance(cells, reuse_ir_distortion), cells)
        self._prog = program_state(plan, cells, h_eff, read_streams)

    def read_plan(self, cells: LayerCells) -> ReadPlan:
        """:meth:`_plan` of ``cells``: sampled or the ideal crossbar, on their device."""
        return self._plan(cells.seeds is not None, cells.h.device)

    def _plan(self, sampled: bool, device: torch.device) -> ReadPlan:
        """How ``cells`` are read (:class:`~engine.programming.ReadPlan`), derived again only when
        something it depends on changed: the hardware (another spec, or any spec edited in place),
        the fitted scalars, the tiles, the calibration observer, folding, the output stage's MMSE and
        zero outputs, the solve budget, a per-read ADC fit, whether the cells are sampled, the device,
        the registered effects and which of them act.
        Re-programming a new instance of the same layer then costs only its cells' operands. A few
        plans are kept per layer, since a trial may alternate between them (``mmse`` programs without
        its output stage to fit it, then with it)."""
        fitted = self.fitted
        registries = effect_registries()
        objects = (self.hw, fitted, self.grid, self.observer, self.zero_outputs, self.fit_adc, *registries)
        values = (
            spec_edits(),
            # which effects act: an effect's own state can turn it on or off (a few calls a programming)
            tuple(e.used(self.hw) for registry in registries for e in registry),
            self.allow_fold,
            self.mmse is not None,
            self.solve_max_bytes,
            sampled,
            device,
        )
        held = self._read_plan
        if held is None or not all(a is b for a, b in zip(held[0], objects)):
            held = self._read_plan = (objects, {})
        plan = held[1].get(values)
        if plan is not None:
            return plan
        coding = self.coding
        delta_v_v = self._delta_v_v(coding)
        setup = ReadSetup(
            grid=self.grid,
            hw=self.hw,
            coding=coding,
            delta_x=fitted.delta_x,
            delta_v_v=delta_v_v,
            layer_index=self.layer_index,
            fold=self.observer is None and self.allow_fold,
            recording=self.observer is not None,
            mmse=self.mmse is not None,
            zero_outputs=self.zero_outputs,
            solve_max_bytes=self.solve_max_bytes,
            fit_adc=self.fit_adc,
        )
        plan = ReadPlan.of(setup, sampled, device, self.tile_operator)
        if len(held[1]) >= 4:  # stale keys (an edited spec) are not kept without bound
            held[1].clear()
        held[1][values] = plan
        return plan

    def effective_conductance(self, cells: LayerCells, reuse_ir_distortion: bool = False) -> torch.Tensor:
        """G_eff per physical tile (above G_min, units of dG): bit-line currents are exactly
        v @ G_eff. With ``hardware.ir_drop`` on a sampled instance, the wire, sense and driver
        resistances of every whole tile (unused cells included) enter through the exact network
        solve of :mod:`engine.irdrop` (RxNN Sec. V-B) or TxSim's path model; otherwise G_eff = G.
        An instance solves each distinct programmed state once (cached by value). With the sinh I-V
        under exact IR drop reads solve the non-linear network instead; this is its small-signal
        (V -> 0) G_eff, which only offline statistics (``tile_shift``) use."""
        hw = self.hw
        acting = self._g_eff_effects(cells.seeds is not None)
        if not acting:
            return cells.h  # no effect of the network changes G_eff
        g_min_n = hw.device.g_min_n
        last = self._ir_solution
        if reuse_ir_distortion and last is not None and last[0].shape == cells.h.shape:
            # TxSim's interpolated FCM: G_eff = G (1 - D), D = (G - G_eff) / G of the last exact solve
            g0, g_eff0 = last[0].double() + g_min_n, last[1].double() + g_min_n
            g = cells.h.double() + g_min_n
            return (irdrop.fcm_interpolate(g, irdrop.fcm_distortion(g0, g_eff0)) - g_min_n).to(cells.h.dtype)

        def solve() -> torch.Tensor:  # in the units of h: dG above G_min
            h = cells.h
            for effect in acting:
                h = effect.effective(h, hw, self.solve_max_bytes)
            return h

        key = ("irdrop", self.layer_index, self.grid, hw.ir_drop.model_dump_json(), str(cells.h.device))
        h_eff = solve() if cells.instance is None else cells.instance.effective(key, cells.h, solve)
        self._ir_solution = (cells.h, h_eff)
        return h_eff

    def _g_eff_effects(self, sampled: bool) -> list[NetworkEffect]:
        """The network effects that make G_eff differ from the programmed G (none on the ideal crossbar)."""
        return [e for e in NETWORK_EFFECTS if e.changes_g_eff and e.used(self.hw)] if sampled else []

    def reset_read_noise(self) -> None:
        """Restart every instance's per-read noise stream (re-evaluation gives the same logits)."""
        p = self._prog
        if p is not None and p.gens is not None:
            assert p.cells.seeds is not None
            self._prog = replace(p, gens=read_noise_streams(p.cells.seeds, self.layer_index, p.cells.h.device))

    # Output stage ------------------------------------------------------------------------------
    def set_output_stage(self, stage: OutputStage) -> None:
        """Set the digital output transforms. MMSE and zero outputs shape the read path (a folded or
        digitised read has no column values to correct), so a programmed layer whose stage gains or
        drops one is programmed again from the same cells, its per-read noise continuing."""
        old, self.output_stage = self.output_stage, stage
        prog = self._prog
        if prog is not None and (
            (old.mmse is None) != (stage.mmse is None) or old.zero_outputs is not stage.zero_outputs
        ):
            self.program_cells(prog.cells, read_streams=prog.gens)

    @property
    def mmse(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.output_stage.mmse

    @property
    def zero_outputs(self) -> torch.Tensor | None:
        return self.output_stage.zero_outputs

    @property
    def output_gain(self) -> torch.Tensor | None:
        return self.output_stage.gain

    # Forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None and self.observer.reads_float:
            self.observer.on_input(x)
            return self.float_forward(x)
        if self._prog is None:
            self.program(None)
        if self.straight_through and torch.is_grad_enabled():
            # RxNN Sec. VI re-training: the crossbar's output forward, the float layer's gradient back
            y_float = self.float_forward(x)
            with torch.no_grad():
                y_xbar = self._crossbar_forward(x.detach())
            return y_float + (y_xbar - y_float).detach()
        return self._crossbar_forward(x)

    def _crossbar_forward(self, x: torch.Tensor) -> torch.Tensor:
        prog = self.state
        if (self.observer is not None) != prog.path.recording:
            raise RuntimeError(
                f"layer {self.name}: programmed before its observer was attached; program inside it"
                if self.observer is not None
                else f"layer {self.name}: programmed under a calibration observer; program again after it"
            )
        if prog.delta_x == 0.0:  # a fitted quantity: never read a layer whose input range was not calibrated
            raise RuntimeError(f"layer {self.name}: input range (DAC step) not calibrated; call calibrate() first")
        codes = prog.coding.quantise(x, prog.delta_x, self.code_scratch.take(x))
        return prog.path.forward(self, prog, codes)

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def native_layout(self, instances: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An empty weight in the contiguous layout :meth:`folded_forward` passes to its kernel (dtype
        and device of ``like``), and its (I, G, k, n) view."""
        raise NotImplementedError

    def native_weight(self, w_eff: torch.Tensor, scale: float, gain: torch.Tensor | None) -> torch.Tensor:
        """The kernel's weight: the (I, G, k, n) folded weight times the dx * dw scale (and the digital
        output gain), written into the kernel's layout in one pass (no layout copy after it)."""
        native, view = self.native_layout(w_eff.shape[0], w_eff)
        torch.mul(w_eff, scale, out=view)
        if gain is not None:
            view.mul_(gain.view(gain.shape[0], self.grid.groups, 1, self.grid.n))
        return native

    def folded_forward(self, codes: torch.Tensor, w_native: torch.Tensor) -> torch.Tensor:
        """Linear read: codes @ W_eff + bias per instance and group (native kernels); ``w_native``
        (from :meth:`native_weight`) already carries the dx * dw scale."""
        raise NotImplementedError

    def from_matrix(self, y: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(I, M, groups * n) read results -> the layer's output layout."""
        raise NotImplementedError

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def read(self, codes: torch.Tensor) -> torch.Tensor:
        """Tiled read of input codes -> (I, M, groups * n) in units of dx * dw, by the read path chosen
        at programming (engine.reads); a folded state has none."""
        return self.state.path.read(self, self.state, codes)

    @property
    def effective_cells(self) -> torch.Tensor | None:
        """G_eff of the programmed state above G_min (dG units, logical rows), shaped like the cells:
        what the read's tile contraction uses (None: not programmed)."""
        return None if self._prog is None else self._prog.h_eff

    @property
    def newton_report(self) -> NewtonReport | None:
        """The slowest non-linear network solve of this programmed state's reads (None: none ran)."""
        return None if self._prog is None or self._prog.currents is None else self._prog.currents.report

    @torch.no_grad()
    def tile_shift(self, x: torch.Tensor) -> torch.Tensor:
        """Partial-sum shift of every tile column caused by G_eff (PytorX Sec. 4.3 statistics):
        ideal minus non-ideal, through an ideal ADC, in the layer's output units.
        Returns (I, G, t_r, M, t_c, wcols); padded columns of the last column tile are NaN."""
        grid, cells = self.grid, self.state.cells
        codes = self.coding.quantise(x, self.fitted.delta_x)
        diff = (cells.h - self.effective_conductance(cells))[..., : grid.used_cols]
        diff = sense(diff.permute(*READ_LAYOUT), grid)  # (I, G, t_r, R, t_c, wcols, S), linear
        op = self.tile_operator(False)
        i, g, tr, r = diff.shape[:4]
        v, _ = op.voltages(codes, self.coding, self.n_instances)
        d = op.apply(v, op.operand(diff.reshape(i, g, tr, r, -1)))
        d = (
            (d.reshape(*d.shape[:4], grid.t_c, grid.wcols, grid.slices) @ self.state.slice_coef.to(d.dtype))
            if grid.slices > 1
            else d.reshape(*d.shape[:4], grid.t_c, grid.wcols)
        )
        p = self.coding.planes
        d = d.reshape(i, g, tr, p, -1, grid.t_c, grid.wcols)
        d = torch.einsum("igtpmcw,p->igtmcw", d, self.coding.plane_coefficients(d.device))
        d = d * (self.fitted.delta_x * self.mapped.delta_w)
        col = torch.arange(grid.t_c * grid.wcols, device=d.device).view(grid.t_c, grid.wcols)
        return d.masked_fill(col >= grid.n, float("nan"))
