"""How a programmed state is read: a small strategy object, chosen once by
:func:`engine.programming.program_state` and kept in the :class:`~engine.programming.ProgrammedState`.
Nothing is switched per read.

* :class:`FoldedRead`: a linear read (ideal ADC, no per-read noise, no network phase that takes the
  read over, no MMSE). The tiles fold exactly into one weight per instance,
  W_eff = sum_s 2**(b s) sense(G_eff) (PytorX eq. 5-6 with Yu eq. 3 f), read by the layer's native kernel.
* :class:`DigitisedRead`: the noiseless quantised read of sensed conductances with the layer's fitted
  ADC. The ADC step is divided into the operand, so the contraction yields I / dI and PytorX eq. 11's
  rounding and clipping run in place.
* :class:`TiledRead`: every other read (PytorX eq. 5-11, Yu eq. 3-4). It runs the network phase's
  bit-line currents, the per-read effects, sensing, the column effects and the column ADC. The ADC is
  the layer's fitted one, one fitted to each read (crossbar training, PytorX Alg. 1), or none (ideal).
  Then come MMSE (Yu eq. 4), digital subtraction, error correction (PytorX Alg. 2) and shift-and-add.
  Under a calibration observer it records the sensed values and reads without the ADC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from .nonideal import ReadContext, TileCurrents
from .nonideal.iv import sinh_voltage
from .periphery import ADC
from .tile_ops import MatmulTiles
from .tiling import sense

if TYPE_CHECKING:
    from .crossbar import CrossbarLayer
    from .programming import ProgrammedState

AdcSource = Literal["none", "fitted", "per_read"]  # ideal or recording / the layer's fitted range / fitted per read


class ReadPath:
    """One way of reading a programmed state. ``forward``: input codes -> the layer's output (scaled,
    digital transforms applied, bias added). ``read``: input codes -> (I, M, groups * n) in units of
    dx * dw (the tiled paths only). ``recording``: programmed under a calibration observer."""

    recording: bool = False

    def forward(self, layer: CrossbarLayer, prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
        """The tiled read, scaled by dx * dw, then the digital output stage and the bias."""
        y = self.read(layer, prog, codes) * (prog.delta_x * layer.mapped.delta_w)
        gain = layer.output_gain  # digital per-output gain (drift compensation), (I, groups * n)
        if gain is not None:
            y = y * gain.unsqueeze(1)
        if prog.zero_outputs is not None:  # Yu eq. 11: outputs with all-zero weights are 0
            y = y.masked_fill(prog.zero_outputs, 0.0)
        return layer.add_bias(layer.from_matrix(y, codes))

    def read(self, layer: CrossbarLayer, prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            f"layer {layer.name}: a folded (linear) state has no tiled read; program it with allow_fold=False"
        )


@dataclass(frozen=True)
class FoldedRead(ReadPath):
    """W_eff x dx dw (x the digital gain) in the native kernel; the bias rides along."""

    def forward(self, layer: CrossbarLayer, prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
        return layer.folded_forward(codes, _folded_weight(layer, prog))


KERNEL_WEIGHT = "w_native"  # a programmed state's memo of its last (scale, gain, kernel weight)


def _folded_weight(layer: CrossbarLayer, prog: ProgrammedState) -> torch.Tensor:
    """The native kernel's weight, built once per programmed state, scale and gain (every read of an
    evaluation shares it), unless the programming wrote it with the cells."""
    scale, gain = prog.delta_x * layer.mapped.delta_w, layer.output_gain
    last = prog.memo(KERNEL_WEIGHT, lambda: [None])
    if last[0] is None or last[0][0] != scale or last[0][1] is not gain:
        w_eff = prog.w_eff
        assert w_eff is not None
        last[0] = (scale, gain, layer.native_weight(w_eff, scale, gain))
    return last[0][2]


@dataclass(frozen=True)
class TiledRead(ReadPath):
    """The general read. ``adc``: where the column ADC comes from; ``recording``: programmed under a
    calibration observer (record the sensed values, no ADC); ``mmse``: Yu eq. 4 on the digitised values;
    ``fit_adc``: the per-read ADC (``adc == "per_read"``)."""

    adc: AdcSource = "none"
    recording: bool = False
    mmse: bool = False
    fit_adc: Callable[[torch.Tensor], ADC] | None = None

    def read(self, layer: CrossbarLayer, prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
        grid, hw = prog.op.grid, layer.hw
        v_rows, _ = prog.op.voltages(codes, prog.coding, prog.cells.n_instances)
        v = _cell_voltages(prog, v_rows)
        assert prog.currents is not None
        cur = prog.currents(v, v_rows)  # (I, G, t_r, P*M, Q): the network phase chosen at programming
        if prog.read_effects:
            cur = cur + _cell_noise(prog, v, hw)
        lead = cur.shape[:4]
        if prog.precombined:
            sensed = cur.reshape(*lead, grid.t_c, grid.wcols, grid.slices)
        else:
            cur = cur.reshape(*lead, grid.arrays, grid.t_c, grid.used_cols)
            sensed = cur if hw.adc.subtract == "digital" else sense(cur, grid)
        if prog.column_effects:
            ctx = _read_context(prog, hw)
            for effect in prog.column_effects:
                sensed = effect.add_noise(sensed, v, {}, ctx)
        if self.recording:
            observer = layer.observer
            assert observer is not None  # checked by the layer before the read
            observer.on_sensed(layer, sensed)
        adc: ADC | None = None
        if self.adc == "fitted":  # the fitted range, on the layer's device: built once per programmed state
            adc = prog.memo("adc", lambda: layer.adc)
        elif self.adc == "per_read":
            assert self.fit_adc is not None
            adc = self.fit_adc(sensed)
        step = torch.ones(grid.slices, dtype=sensed.dtype, device=sensed.device)
        if adc is not None:  # keep integer codes; the step joins the shift-and-add weights below
            sensed = adc.codes(sensed)
            step = adc.delta_i.to(sensed.dtype).expand(grid.slices)
        if self.mmse:
            # Yu eq. 4 on the digitised column value, then the hard decision (nearest integer)
            assert layer.mmse is not None  # the layer re-programs when its output stage changes
            a, b = (t.to(sensed.device, sensed.dtype) for t in layer.mmse)
            shape = sensed.shape
            per_slice = sensed.reshape(*shape[:-1], -1, grid.slices)
            est = torch.round(a * (per_slice * step) + b)
            if hw.adc.subtract == "digital":
                est = est.clamp_min(0.0)  # a single array's column current is a natural number
            sensed = est.reshape(shape)
            step = torch.ones_like(step)
        if hw.adc.subtract == "digital" and not prog.precombined:
            sensed = sense(sensed, grid)
        if (corr_matrix := prog.correction_matrix) is not None:  # PytorX Alg. 2 line 4: f_adc(V G_diff)
            correction = prog.memo("correction", lambda: prog.op.operand(corr_matrix))
            ec = prog.op.apply(v, correction).reshape(sensed.shape)
            sensed = sensed + (adc.codes(ec) if adc is not None else ec)
        return _shift_add(prog, sensed, step * prog.slice_coef.to(sensed.dtype))


@dataclass(frozen=True)
class DigitisedRead(ReadPath):
    """The common noiseless quantised read, the same result as :class:`TiledRead` in fewer passes over
    the (chunk x row tile x column) partial sums: the ADC step is divided into the operand, so the
    read yields I / dI directly; rounding and clipping (PytorX eq. 11) run in place in the operator's
    native layout; chunks and row tiles are contracted first (Yu eq. 3 f shift and add), weight slices
    last, on the small result. Its ADC is the layer's fitted one."""

    def read(self, layer: CrossbarLayer, prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
        grid = prog.op.grid
        v = _voltages(prog, codes)
        adc = prog.memo("adc", lambda: layer.adc)
        assert isinstance(prog.currents, TileCurrents) and adc is not None  # precombined: the sensed conductances
        sensed_matrix = prog.currents.matrix
        step = adc.delta_i.to(sensed_matrix.dtype).expand(grid.slices)
        per_column = step.repeat(grid.t_c * grid.wcols)
        # the ADC is fixed for the programmed state: divide once
        digitised = prog.memo("digitised", lambda: prog.op.operand(sensed_matrix / per_column))
        out = prog.op.apply_native(v, digitised)
        out.round_().clamp_(adc.lo, adc.hi)
        if (corr_matrix := prog.correction_matrix) is not None:  # PytorX Alg. 2: its own conversion
            corr = prog.memo("digitised_correction", lambda: prog.op.operand(corr_matrix / per_column))
            out += prog.op.apply_native(v, corr).round_().clamp_(adc.lo, adc.hi)
        y = prog.op.contract(out, prog.plane_coef)  # (I, G, M, t_c*wcols*S)
        return _combine_slices(
            prog, y.reshape(*y.shape[:3], grid.t_c, grid.wcols, grid.slices), step * prog.slice_coef.to(y.dtype)
        )


def _cell_voltages(prog: ProgrammedState, v_rows: torch.Tensor) -> torch.Tensor:
    """The DAC voltages as linear cells see them: V_0 sinh(V / V_0) with the sinh I-V without wires
    (engine.nonideal.iv), else the row voltages themselves."""
    return v_rows if prog.iv_v0 is None else sinh_voltage(v_rows, prog.iv_v0)


def _voltages(prog: ProgrammedState, codes: torch.Tensor) -> torch.Tensor:
    return _cell_voltages(prog, prog.op.voltages(codes, prog.coding, prog.cells.n_instances)[0])


def _shift_add(prog: ProgrammedState, sensed: torch.Tensor, slice_w: torch.Tensor) -> torch.Tensor:
    """Digital recombination (Yu eq. 3 f): weighted sum over input chunks and plain sum over row tiles
    (one pass over the partial sums), then over weight slices on the small result.
    (I, G, t_r, P*M, t_c, wcols, S) -> (I, M, G*n)."""
    return _combine_slices(prog, MatmulTiles.contract(sensed, prog.plane_coef), slice_w)


def _combine_slices(prog: ProgrammedState, y: torch.Tensor, slice_w: torch.Tensor) -> torch.Tensor:
    """(I, G, M, t_c, wcols, S) weighted over slices -> (I, M, G*n), padded columns dropped."""
    grid = prog.op.grid
    y = (y @ slice_w).reshape(*y.shape[:3], grid.t_c * grid.wcols)
    return y[..., : grid.n].transpose(1, 2).reshape(y.shape[0], -1, grid.groups * grid.n)


# Per-read noise: each instance's own stream (the only loop over instances) --------------------------
def _read_context(prog: ProgrammedState, hw) -> ReadContext:
    gens = prog.gens or []

    def randn(shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.randn(shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in gens])

    def rand(shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.rand(shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in gens])

    return ReadContext(prog.op, randn, rand, hw.input.v_read_v / prog.coding.max_chunk, hw)


def _cell_noise(prog: ProgrammedState, v: torch.Tensor, hw) -> torch.Tensor:
    """The per-read effects' bit-line currents (engine.nonideal.READ_EFFECTS, in order: 1/f, read
    fluctuation, thermal/shot, telegraph), engine units, shaped like the raw currents (I, G, t_r, P*M, Qraw)."""
    ctx = _read_context(prog, hw)
    noise = torch.zeros((), device=v.device, dtype=v.dtype)
    for effect, ops in prog.read_effects:
        noise = effect.add_noise(noise, v, ops, ctx)
    return noise


def choose(
    *,
    linear: bool,
    fold: bool,
    digitisable: bool,
    adc_kind: str,
    recording: bool,
    mmse: bool,
    fit_adc: Callable[[torch.Tensor], ADC] | None,
) -> ReadPath:
    """The read path of a programmed state (engine.programming.program_state)."""
    if linear and fold:
        return FoldedRead()
    if recording:
        return TiledRead(adc="none", recording=True)
    if fit_adc is not None:
        return TiledRead(adc="per_read", mmse=mmse, fit_adc=fit_adc)
    if adc_kind == "ideal":
        return TiledRead(adc="none", mmse=mmse)
    if digitisable and not mmse:
        return DigitisedRead()
    return TiledRead(adc="fitted", mmse=mmse)
