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
runs the native matmul/convolution kernel on the input codes (``folded`` path).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from . import irdrop, seeding
from .calibration import ReadObserver
from .hardware import HardwareSpec
from .instance import HardwareInstance, LayerCells, ideal_cells
from .mapping import MappedWeights, Scheme, map_weights, slice_weights
from .nonideal import (
    NETWORK_EFFECTS,
    READ_EFFECTS,
    BitLineCurrents,
    NetworkContext,
    ProgramContext,
    ReadContext,
    ReadEffect,
    TileCurrents,
)
from .nonideal.iv import NewtonReport, sinh_voltage
from .periphery import ADC, InputCoding
from .tile_ops import ConvTiles, MatmulTiles
from .tiling import TileGrid


@dataclass
class _Programmed:
    """Per-instance tensors derived from the cells once, reused by every read."""

    cells: LayerCells
    op: MatmulTiles | ConvTiles
    delta_x: float  # the DAC step when programmed (a host scalar: no device sync per read)
    coding: InputCoding  # the input code (its sign read once from the calibrated buffer)
    plane_coef: torch.Tensor  # (planes,) shift-and-add weights of the DAC chunks, on the device
    adc: ADC | None  # the column ADC on the cells' device (None: ideal, or not read yet)
    slice_coef: torch.Tensor  # (slices,) shift-and-add weights 2**(b s), float32 on the device
    h_eff: torch.Tensor | None = None  # logical G_eff of the cells (above G_min, dG units)
    currents: BitLineCurrents | None = None  # the read's network phase: DAC voltages -> bit-line currents
    digitised: torch.Tensor | None = None  # sensed operand / ADC step per column (built on first read)
    precombined: bool = False  # the operand holds sensed conductances (analog subtraction, linear sensing)
    digitisable: bool = False  # a noiseless precombined read: the fast digitised path applies (with an ADC)
    w_eff: torch.Tensor | None = None  # (I, G, k, n) folded weight in units of dw
    w_native: tuple | None = None  # (scale, gain, kernel weight) of the last folded reads
    correction_matrix: torch.Tensor | None = None  # (I, G, t_r, R, Q) sensed digital correction (EC)
    correction: torch.Tensor | None = None  # its operand (built on first use)
    digitised_correction: torch.Tensor | None = None  # correction / ADC step per column (fast read)
    iv_v0: float | None = None  # sinh I-V: V_0 in units of the DAC step (None: linear cells)
    gens: list[torch.Generator] | None = None
    read_effects: tuple[tuple[ReadEffect, Mapping[str, Any]], ...] = ()  # bit-line effects in use, their operands
    column_effects: tuple[ReadEffect, ...] = ()  # per-read effects on the sensed column values


@functools.lru_cache(maxsize=64)
def _coefficients(n: int, bits: int, device: torch.device) -> torch.Tensor:
    """(n,) float32 powers 2**(bits j): DAC plane and slice shift-and-add weights (Yu eq. 3, f),
    made once per device (every programming of every layer uses them; do not modify)."""
    return slice_weights(n, bits, device).to(torch.float32)


@dataclass(frozen=True)
class OutputStage:
    """The digital output transforms of one layer, an immutable value. Mitigations return the fields
    they set (``engine.mitigations.base.StageUpdate``); the strategy applies them through
    :meth:`engine.conversion.CrossbarModel.set_output_stage`, so no mitigation writes the layer."""

    mmse: tuple[torch.Tensor, torch.Tensor] | None = None  # per slice (a, (1-a) E[J]), Yu eq. 4
    zero_outputs: torch.Tensor | None = None  # (groups * n,) bool, Yu eq. 11 (folded in at programming)
    gain: torch.Tensor | None = None  # (I, groups * n) digital gain of the outputs (drift_comp)


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
        self._mapped: MappedWeights | None = None
        self._prog: _Programmed | None = None
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
    def coding(self) -> InputCoding:
        ip = self.hw.input
        return InputCoding(ip.input_bits, ip.dac_bits, bool(self.x_signed))

    @property
    def delta_v_v(self) -> float:
        """DAC step of this layer in volts: the largest chunk magnitude drives v_read_v."""
        return self.hw.input.v_read_v / self.coding.max_chunk

    @property
    def mapped(self) -> MappedWeights:
        if self._mapped is None:
            self._mapped = map_weights(self.weight_matrix(), self.hw, self.scheme)
        return self._mapped

    def target_levels(self) -> torch.Tensor:
        """Ideal cell levels (float32, integer-valued), (arrays, groups, t_r, t_c, rows, cols); placed
        once per mapping and grid (read-only: every instance starts from it)."""
        m, cached = self.mapped, getattr(self, "_levels", None)
        if cached is None or cached[0] is not m or cached[1] != self.grid:
            if m.digits is None:  # placed before on another grid: map again
                self._mapped = None
                m = self.mapped
            levels = self.grid.place(m.digits, m.reference).to(torch.float32)
            self._mapped = m = replace(m, digits=None)  # the digits live on as the placed levels only
            self._levels = (m, self.grid, levels)
        return self._levels[2]

    def remap(self, scheme: Scheme | None = None) -> None:
        """Re-quantise and re-map after the weight or the mapping scheme changed."""
        if scheme is not None:
            self.scheme = scheme
        self._mapped = None
        self._prog = None

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
        if a.full_scale_a is not None:  # given range; the sign still comes from calibration
            max_abs = a.full_scale_a / (self.hw.device.delta_g_s * self.delta_v_v)
            return ADC.calibrated(a.bits, torch.tensor([max_abs], device=dev), signed=bool(self.adc_signed))
        if torch.isnan(self.adc_max_abs).any():
            raise RuntimeError(f"layer {self.name}: ADC range not calibrated; call calibrate() first")
        max_abs = self.adc_max_abs if a.range_scope == "slice" else self.adc_max_abs.max().reshape(1)
        return ADC.calibrated(a.bits, max_abs, bool(self.adc_signed))

    def _apply(self, fn, recurse: bool = True):
        """Moving the layer (``.to(device)``) moves its parameters and calibration buffers; the
        derived state (mapping, placed levels, programmed cells, tile index tables) is rebuilt on
        the new device when next needed."""
        out = super()._apply(fn, recurse)
        self._mapped, self._prog, self._ir_solution = None, None, None
        for attr in ("_levels", "_conv_tiles"):
            if hasattr(self, attr):
                delattr(self, attr)
        return out

    # Programming -----------------------------------------------------------------------------
    def program(
        self, instance: HardwareInstance | list[int] | tuple[int, ...] | None, reuse_ir_distortion: bool = False
    ) -> None:
        """Program a sampled instance (``None``: the ideal crossbar, no read noise). A list of
        seeds samples a new :class:`HardwareInstance` of this layer's hardware.
        ``reuse_ir_distortion``: TxSim's interpolated FCM, G_eff = G (1 - D) with D from the last
        exact solve (re-training between its solves)."""
        levels = self.target_levels()
        if instance is None:
            self.program_cells(ideal_cells(levels))
            return
        if not isinstance(instance, HardwareInstance):
            instance = HardwareInstance(instance, self.hw)
        elif instance.hw is not self.hw and instance.hw != self.hw:
            raise ValueError(f"layer {self.name}: the instance was sampled for other hardware than the layer's")
        self.program_cells(instance.cells(levels, self.layer_index), reuse_ir_distortion)

    def tile_operator(self, cell_draws: bool) -> MatmulTiles | ConvTiles:
        """How reads meet tiles; ``cell_draws``: per-cell per-read draws are needed."""
        raise NotImplementedError

    def program_cells(
        self,
        cells: LayerCells,
        reuse_ir_distortion: bool = False,
        read_streams: list[torch.Generator] | None = None,
    ) -> None:
        """Program given cells (a mitigation may have edited them) and precompute read operands
        (``reuse_ir_distortion``: see :meth:`program`). ``read_streams``: per-instance generators the
        per-read noise continues from (crossbar training re-programs after every update; default: the
        instances' streams from their start)."""
        hw, grid = self.hw, self.grid
        noisy = cells.seeds is not None and hw.any_read_noise
        effects = [e for e in READ_EFFECTS if e.used(hw)] if noisy else []
        read_effects = [e for e in effects if e.stage == "bit_line"]  # on the cells' raw currents
        cell_draws = any(e.needs_cell_draws(hw) for e in read_effects)
        network = [e for e in NETWORK_EFFECTS if e.used(hw)] if cells.seeds is not None else []
        takes_read = [e for e in network if e.takes_read(hw)]  # the read's own currents (loaded DAC, Newton)
        solved = any(e.solves_read(hw) for e in network)  # input-dependent: a solve per read, no G_eff
        if solved and cells.row_source is not None:
            raise ValueError(
                f"layer {self.name}: row remapping is not modelled with iv.model: sinh under exact IR "
                f"drop (the network is solved on physical rows)"
            )
        dev = cells.h.device
        prog = _Programmed(
            cells=cells,
            op=self.tile_operator(cell_draws or bool(takes_read)),
            delta_x=float(self.delta_x),
            adc=None,  # built from the fitted range on the first read outside a calibration pass
            coding=self.coding,
            plane_coef=_coefficients(self.coding.planes, self.coding.dac_bits, dev),
            slice_coef=_coefficients(grid.slices, hw.device.bits_per_cell, dev),
        )
        prog.iv_v0 = next((v0 for e in network if (v0 := e.voltage(hw, self.delta_v_v)) is not None), None)
        prev = self._prog
        if solved:
            h_eff = cells.h  # the wires enter each read's solve
        elif (
            prev is not None
            and prev.cells.h is cells.h
            and prev.cells.row_source is cells.row_source
            and prev.cells.row_flipped is cells.row_flipped
        ):
            h_eff = prev.h_eff  # the same cells re-programmed (e.g. with a correction): no new IR-drop solve
        else:
            h_eff = self.to_logical(self.effective_conductance(cells, reuse_ir_distortion), cells)
        prog.h_eff = h_eff
        raw = h_eff[..., : grid.used_cols].permute(0, 2, 3, 5, 1, 4, 6)  # (I, G, t_r, R, A, t_c, used)
        i, g, tr, r = raw.shape[:4]
        g_min_n = hw.device.g_min_s / hw.device.delta_g_s
        corr = None
        if cells.correction is not None:
            corr = self.to_logical(cells.correction, cells)[..., : grid.used_cols]
            corr = self.sense(corr.permute(0, 2, 3, 5, 1, 4, 6))
        linear = hw.adc.kind == "ideal" and not noisy and not takes_read and self.mmse is None and prog.iv_v0 is None
        if linear and self.observer is None and self.allow_fold:
            sensed = self.sense(raw) if corr is None else self.sense(raw) + corr  # exact with an ideal ADC
            # (I,G,t_r,R,t_c,wcols); one slice needs no shift-and-add pass
            folded = sensed[..., 0] if grid.slices == 1 else (sensed * prog.slice_coef).sum(-1)
            folded = folded.reshape(i, g, tr * r, grid.t_c * grid.wcols)
            w_eff = folded[:, :, : grid.k, : grid.n]
            if self.zero_outputs is not None:  # Yu eq. 11 in the folded weight
                w_eff = w_eff.masked_fill(self.zero_outputs.view(grid.groups, 1, grid.n), 0.0)
            prog.w_eff = w_eff.contiguous()
        else:
            if corr is not None:
                prog.correction_matrix = corr.reshape(i, g, tr, r, -1)
            prog.precombined = hw.adc.subtract == "analog" and not read_effects and not takes_read
            # the noiseless quantised read of precombined operands may take the digitised fast path
            prog.digitisable = prog.precombined and not noisy
            if takes_read:  # the effect builds its operands from the physical cells (G_min included)
                ctx = NetworkContext(
                    prog.op, grid, hw, cells.h, h_eff, raw, self.delta_v_v, prog.coding.max_chunk, self.solve_max_bytes
                )
                prog.currents = takes_read[0].currents(ctx)
            else:
                if prog.precombined:  # sensing is linear: subtract the conductances once, not per read
                    mat = self.sense(raw)
                elif hw.adc.subtract == "digital":  # every column is digitised with its G_min current
                    mat = raw + g_min_n
                else:  # analog subtraction cancels G_min exactly
                    mat = raw
                # precombined: the operand is built on first use (the digitised read has its own)
                prog.currents = TileCurrents(prog.op, mat.reshape(i, g, tr, r, -1), eager=not prog.precombined)
        if read_effects:
            g_phys = (raw + g_min_n).reshape(i, g, tr, r, -1)

            def target_rel() -> torch.Tensor:  # the cells' target levels / G_max, in g_phys' layout
                assert cells.levels is not None  # sampled cells keep their targets
                levels = cells.levels if cells.levels.dim() == 7 else cells.levels.unsqueeze(0)
                levels = self.to_logical(levels.to(raw.dtype).expand_as(cells.h), cells)[..., : grid.used_cols]
                g_rel = (levels.permute(0, 2, 3, 5, 1, 4, 6) + g_min_n) * (hw.device.delta_g_s / hw.device.g_max_s)
                return g_rel.reshape(i, g, tr, r, -1)

            ctx = ProgramContext(g_phys, prog.op, target_rel, hw)
            prog.read_effects = tuple((e, e.operands(ctx)) for e in read_effects)
        prog.column_effects = tuple(e for e in effects if e.stage == "column")
        if noisy:
            prog.gens = read_streams or [
                seeding.torch_generator(s, self.layer_index, seeding.READ_NOISE, dev) for s in cells.seeds
            ]
        self._prog = prog

    @staticmethod
    def to_logical(t: torch.Tensor, cells: LayerCells) -> torch.Tensor:
        """Physical tile rows -> logical rows under a row remapping (identity when none):
        logical row r reads physical row row_source[r], with the arrays swapped where flipped
        (the input is negated digitally, so the stored -w acts as w)."""
        if cells.row_source is None:
            return t
        idx = cells.row_source[:, None, ..., None].expand(-1, t.shape[1], *cells.row_source.shape[1:], t.shape[-1])
        t = torch.gather(t, 5, idx)
        if cells.row_flipped is not None:
            flip = cells.row_flipped[:, None, ..., None]
            t = torch.where(flip, t.flip(1), t)
        return t

    def effective_conductance(self, cells: LayerCells, reuse_ir_distortion: bool = False) -> torch.Tensor:
        """G_eff per physical tile (above G_min, units of dG): bit-line currents are exactly
        v @ G_eff. With ``hardware.ir_drop`` on a sampled instance, the wire, sense and driver
        resistances of every whole tile (unused cells included) enter through the exact network
        solve of :mod:`engine.irdrop` (RxNN Sec. V-B) or TxSim's path model; otherwise G_eff = G.
        An instance solves each distinct programmed state once (cached by value). With the sinh I-V
        under exact IR drop reads solve the non-linear network instead; this is its small-signal
        (V -> 0) G_eff, which only offline statistics (``tile_shift``) use."""
        hw = self.hw
        acting = [e for e in NETWORK_EFFECTS if e.changes_g_eff and e.used(hw)] if cells.seeds is not None else []
        if not acting:
            return cells.h  # no effect of the network changes G_eff
        g_min_n = hw.device.g_min_s / hw.device.delta_g_s
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

    def reset_read_noise(self) -> None:
        """Restart every instance's per-read noise stream (re-evaluation gives the same logits)."""
        p = self._prog
        if p is not None and p.gens is not None:
            dev = p.cells.h.device
            p.gens = [seeding.torch_generator(s, self.layer_index, seeding.READ_NOISE, dev) for s in p.cells.seeds]

    # Sensing and recombination ---------------------------------------------------------------
    def sense(self, t: torch.Tensor) -> torch.Tensor:
        """(..., A, t_c, used) physical columns -> (..., t_c, wcols, S) signed column values:
        I+ - I- (differential) or I_data - I_ref (offset). Linear, so it also applies to G."""
        grid = self.grid
        lead = t.shape[:-3]
        data = t[..., : grid.data_cols].reshape(*lead, grid.arrays, grid.t_c, grid.wcols, grid.slices)
        if not grid.offset:
            return data[..., 0, :, :, :] - data[..., 1, :, :, :]
        ref = t[..., 0, :, grid.data_cols : grid.used_cols].unsqueeze(-2)
        return data[..., 0, :, :, :] - ref

    def _slice_coef(self, like: torch.Tensor) -> torch.Tensor:
        return slice_weights(self.grid.slices, self.hw.device.bits_per_cell, like.device).to(like.dtype)

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
        dx = self._prog.delta_x
        if dx == 0.0:  # a fitted quantity: never read a layer whose input range was not calibrated
            raise RuntimeError(f"layer {self.name}: input range (DAC step) not calibrated; call calibrate() first")
        codes = self._prog.coding.quantise(x, dx)
        scale = dx * self.mapped.delta_w
        gain = self.output_gain  # digital per-output gain (drift compensation), (I, groups * n)
        if self._prog.w_eff is not None:
            if self.observer is not None:  # a folded read has no sensed values to record
                raise RuntimeError(f"layer {self.name}: programmed before its observer was attached; program inside it")
            # scale and bias ride along in the native kernel: no extra passes over the output
            return self.folded_forward(codes, self._folded_weight(scale, gain))
        y = self.read(codes) * scale
        if gain is not None:
            y = y * gain.unsqueeze(1)
        if self.zero_outputs is not None:  # Yu eq. 11: outputs with all-zero weights are 0
            y = y.masked_fill(self.zero_outputs, 0.0)
        return self.add_bias(self.from_matrix(y, codes))

    def _folded_weight(self, scale: float, gain: torch.Tensor | None) -> torch.Tensor:
        """The native kernel's weight: W_eff x dx dw (x the digital gain), in :meth:`fold_layout`,
        built once per programmed state, scale and gain (every read of an evaluation shares it)."""
        prog = self._prog
        assert prog is not None and prog.w_eff is not None
        if prog.w_native is None or prog.w_native[0] != scale or prog.w_native[1] is not gain:
            w = prog.w_eff * scale
            if gain is not None:
                w = w * gain.view(gain.shape[0], self.grid.groups, 1, self.grid.n)
            prog.w_native = (scale, gain, self.fold_layout(w))
        return prog.w_native[2]

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fold_layout(self, w_eff: torch.Tensor) -> torch.Tensor:
        """(I, G, k, n) folded weight -> the contiguous layout :meth:`folded_forward` passes to its kernel."""
        raise NotImplementedError

    def folded_forward(self, codes: torch.Tensor, w_native: torch.Tensor) -> torch.Tensor:
        """Linear read: codes @ W_eff + bias per instance and group (native kernels); ``w_native``
        (from :meth:`fold_layout`) already carries the dx * dw scale."""
        raise NotImplementedError

    def from_matrix(self, y: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(I, M, groups * n) read results -> the layer's output layout."""
        raise NotImplementedError

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def read(self, codes: torch.Tensor, fit_adc: Callable[[torch.Tensor], ADC] | None = None) -> torch.Tensor:
        """Tiled read of input codes -> (I, M, groups * n) in units of dx * dw. ``fit_adc``: the column
        ADC as a function of the values it converts (crossbar training: PytorX Alg. 1's range of each
        training batch); default: the layer's fitted ADC."""
        grid, hw, prog = self.grid, self.hw, self._prog
        v_rows, _ = prog.op.voltages(codes, prog.coding, self.n_instances)
        # cells' currents as linear cells at V_0 sinh(V / V_0) would carry them (sinh I-V, no wires)
        v = v_rows if prog.iv_v0 is None else sinh_voltage(v_rows, prog.iv_v0)
        adc = None
        if fit_adc is None and self.observer is None:
            if prog.adc is None and hw.adc.kind != "ideal":
                prog.adc = self.adc  # the fitted range, on the layer's device: built once per programmed state
            adc = prog.adc
        if adc is not None and prog.digitisable and self.mmse is None:
            return self._digitised_read(v, adc)
        assert prog.currents is not None, "a folded (linear) program is read by folded_forward"
        cur = prog.currents(v, v_rows)  # (I, G, t_r, P*M, Q): the network phase chosen at programming
        if prog.read_effects:
            cur = cur + self._cell_noise(v)
        lead = cur.shape[:4]
        if prog.precombined:
            sensed = cur.reshape(*lead, grid.t_c, grid.wcols, grid.slices)
        else:
            cur = cur.reshape(*lead, grid.arrays, grid.t_c, grid.used_cols)
            sensed = cur if hw.adc.subtract == "digital" else self.sense(cur)
        if prog.column_effects:
            ctx = self._read_context()
            for effect in prog.column_effects:
                sensed = effect.add_noise(sensed, v, {}, ctx)
        if fit_adc is not None:
            adc = fit_adc(sensed)
        recording = self.observer is not None  # a calibration pass: record, read without the ADC
        if self.observer is not None:
            self.observer.on_sensed(self, sensed)
        adc = None if recording else adc
        step = torch.ones(grid.slices, dtype=sensed.dtype, device=sensed.device)
        if adc is not None:  # keep integer codes; the step joins the shift-and-add weights below
            sensed = adc.codes(sensed)
            step = adc.delta_i.to(sensed.dtype).expand(grid.slices)
        if self.mmse is not None and not recording:
            # Yu eq. 4 on the digitised column value, then the hard decision (nearest integer)
            a, b = (t.to(sensed.device, sensed.dtype) for t in self.mmse)
            shape = sensed.shape
            per_slice = sensed.reshape(*shape[:-1], -1, grid.slices)
            est = torch.round(a * (per_slice * step) + b)
            if hw.adc.subtract == "digital":
                est = est.clamp_min(0.0)  # a single array's column current is a natural number
            sensed = est.reshape(shape)
            step = torch.ones_like(step)
        if hw.adc.subtract == "digital" and not prog.precombined:
            sensed = self.sense(sensed)
        if prog.correction_matrix is not None:  # PytorX Alg. 2 line 4: y_ec = f_adc(V G_diff+ - V G_diff-)
            if prog.correction is None:
                prog.correction = prog.op.operand(prog.correction_matrix)
            ec = prog.op.apply(v, prog.correction).reshape(sensed.shape)
            sensed = sensed + (adc.codes(ec) if adc is not None else ec)
        return self._shift_add(sensed, step * prog.slice_coef.to(sensed.dtype))

    @property
    def effective_cells(self) -> torch.Tensor | None:
        """G_eff of the programmed state above G_min (dG units, logical rows), shaped like the cells:
        what the read's tile contraction uses (None: not programmed)."""
        return None if self._prog is None else self._prog.h_eff

    @property
    def newton_report(self) -> NewtonReport | None:
        """The slowest non-linear network solve of this programmed state's reads (None: none ran)."""
        return None if self._prog is None or self._prog.currents is None else self._prog.currents.report

    def _digitised_read(self, v: torch.Tensor, adc: ADC) -> torch.Tensor:
        """The common noiseless quantised read, the same result as the general path in fewer passes
        over the (chunk x row tile x column) partial sums: the ADC step is divided into the operand,
        so the read yields I / dI directly; rounding and clipping (PytorX eq. 11) run in place in
        the operator's native layout; chunks and row tiles are contracted first (Yu eq. 3 f shift
        and add), weight slices last, on the small result."""
        grid, prog = self.grid, self._prog
        assert isinstance(prog.currents, TileCurrents)  # precombined: the sensed conductances
        sensed_matrix = prog.currents.matrix
        step = adc.delta_i.to(sensed_matrix.dtype).expand(grid.slices)
        if prog.digitised is None:  # the ADC is fixed for the programmed state: divide once
            prog.digitised = prog.op.operand(sensed_matrix / step.repeat(grid.t_c * grid.wcols))
        out = prog.op.apply_native(v, prog.digitised)
        out.round_().clamp_(adc.lo, adc.hi)
        if prog.correction_matrix is not None:  # PytorX Alg. 2: the correction has its own conversion
            if prog.digitised_correction is None:
                per_column = step.repeat(grid.t_c * grid.wcols)
                prog.digitised_correction = prog.op.operand(prog.correction_matrix / per_column)
            out += prog.op.apply_native(v, prog.digitised_correction).round_().clamp_(adc.lo, adc.hi)
        y = prog.op.contract(out, prog.plane_coef)  # (I, G, M, t_c*wcols*S)
        return self._combine_slices(
            y.reshape(*y.shape[:3], grid.t_c, grid.wcols, grid.slices), step * prog.slice_coef.to(y.dtype)
        )

    def _shift_add(self, sensed: torch.Tensor, slice_w: torch.Tensor) -> torch.Tensor:
        """Digital recombination (Yu eq. 3 f): weighted sum over input chunks and plain sum over
        row tiles (one pass over the partial sums), then over weight slices on the small result.
        (I, G, t_r, P*M, t_c, wcols, S) -> (I, M, G*n)."""
        return self._combine_slices(MatmulTiles.contract(sensed, self._prog.plane_coef), slice_w)

    def _combine_slices(self, y: torch.Tensor, slice_w: torch.Tensor) -> torch.Tensor:
        """(I, G, M, t_c, wcols, S) weighted over slices -> (I, M, G*n), padded columns dropped."""
        grid = self.grid
        y = (y @ slice_w).reshape(*y.shape[:3], grid.t_c * grid.wcols)
        return y[..., : grid.n].transpose(1, 2).reshape(y.shape[0], -1, grid.groups * grid.n)

    @torch.no_grad()
    def tile_shift(self, x: torch.Tensor) -> torch.Tensor:
        """Partial-sum shift of every tile column caused by G_eff (PytorX Sec. 4.3 statistics):
        ideal minus non-ideal, through an ideal ADC, in the layer's output units.
        Returns (I, G, t_r, M, t_c, wcols); padded columns of the last column tile are NaN."""
        grid, cells = self.grid, self.cells
        codes = self.coding.quantise(x, float(self.delta_x))
        diff = (cells.h - self.effective_conductance(cells))[..., : grid.used_cols]
        diff = self.sense(diff.permute(0, 2, 3, 5, 1, 4, 6))  # (I, G, t_r, R, t_c, wcols, S), linear
        op = self.tile_operator(False)
        i, g, tr, r = diff.shape[:4]
        v, _ = op.voltages(codes, self.coding, self.n_instances)
        d = op.apply(v, op.operand(diff.reshape(i, g, tr, r, -1)))
        d = (
            (d.reshape(*d.shape[:4], grid.t_c, grid.wcols, grid.slices) @ self._slice_coef(d))
            if grid.slices > 1
            else d.reshape(*d.shape[:4], grid.t_c, grid.wcols)
        )
        p = self.coding.planes
        d = d.reshape(i, g, tr, p, -1, grid.t_c, grid.wcols)
        d = torch.einsum("igtpmcw,p->igtmcw", d, self.coding.plane_coefficients(d.device))
        d = d * (float(self.delta_x) * self.mapped.delta_w)
        col = torch.arange(grid.t_c * grid.wcols, device=d.device).view(grid.t_c, grid.wcols)
        return d.masked_fill(col >= grid.n, float("nan"))

    # Per-read noise --------------------------------------------------------------------------
    def _randn(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        gens = self._prog.gens
        return torch.stack([torch.randn(shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in gens])

    def _rand(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        gens = self._prog.gens
        return torch.stack([torch.rand(shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in gens])

    def _read_context(self) -> ReadContext:
        prog = self._prog
        return ReadContext(prog.op, self._randn, self._rand, self.hw.input.v_read_v / prog.coding.max_chunk, self.hw)

    def _cell_noise(self, v: torch.Tensor) -> torch.Tensor:
        """The per-read effects' bit-line currents (engine.nonideal.READ_EFFECTS, in order: 1/f, read
        fluctuation, thermal/shot, telegraph), engine units, shaped like the raw currents (I, G, t_r, P*M, Qraw)."""
        prog = self._prog
        ctx = self._read_context()
        noise = torch.zeros((), device=v.device, dtype=v.dtype)
        for effect, ops in prog.read_effects:
            noise = effect.add_noise(noise, v, ops, ctx)
        return noise
