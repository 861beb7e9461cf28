"""A layer's programmed state: an immutable value built by one pure function, :func:`program_state`.

From what was programmed (the instance's cells, their effective conductances G_eff) and how the
layer reads (:class:`ReadSetup`: tiles, hardware, the fitted input code and DAC step, the output
stage's fields that shape programming), it derives every read operand once: the network phase's
bit-line currents (:mod:`engine.nonideal.network`), the per-read effects' operands, the sensed
digital correction (PytorX Alg. 2), when the read is linear the folded weight, and the read path
(:mod:`engine.reads`: folded, digitised or tiled), chosen here once. Operands that need a later fit
(the ADC's step) are memoised in the state on first use, never reassigned. What depends on the
setup alone (:class:`ReadPlan`: the network plan, the effects in use, the read path) is derived
once per setup; a layer keeps it across the instances it is programmed with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import seeding
from .hardware import HardwareSpec
from .instance import LayerCells
from .mapping import slice_weights
from .nonideal import (
    NETWORK_EFFECTS,
    READ_EFFECTS,
    BitLineCurrents,
    NetworkContext,
    NetworkEffect,
    ProgramContext,
    ReadEffect,
    TileCurrents,
)
from .periphery import ADC, InputCoding
from .reads import KERNEL_WEIGHT, FoldedRead, ReadPath, choose
from .tile_ops import ConvTiles, MatmulTiles
from .tiling import READ_LAYOUT, TileGrid, sense


@functools.lru_cache(maxsize=64)
def coefficients(n: int, bits: int, device: torch.device) -> torch.Tensor:
    """(n,) float32 powers 2**(bits j): DAC plane and slice shift-and-add weights (Yu eq. 3, f),
    made once per device (every programming of every layer uses them; do not modify)."""
    return slice_weights(n, bits, device).to(torch.float32)


def to_logical(t: torch.Tensor, cells: LayerCells) -> torch.Tensor:
    """Physical tile rows -> logical rows under a row remapping (identity when none): logical row r
    reads physical row row_source[r], with the arrays swapped where flipped (the input is negated
    digitally, so the stored -w acts as w)."""
    if cells.row_source is None:
        return t
    idx = cells.row_source[:, None, ..., None].expand(-1, t.shape[1], *cells.row_source.shape[1:], t.shape[-1])
    t = torch.gather(t, 5, idx)
    if cells.row_flipped is not None:
        flip = cells.row_flipped[:, None, ..., None]
        t = torch.where(flip, t.flip(1), t)
    return t


@dataclass(frozen=True)
class NetworkPlan:
    """Which network effects act on a programming: all in use, the one that takes the read over
    (loaded DAC, Newton solve; None: the tile contraction), whether reads solve the network themselves
    (then there is no G_eff), and V_0 of the sinh I-V in DAC steps."""

    effects: tuple[NetworkEffect, ...]
    takes_read: NetworkEffect | None
    solved: bool
    iv_v0: float | None

    @classmethod
    def of(cls, hw: HardwareSpec, sampled: bool, delta_v_v: float) -> NetworkPlan:
        effects = tuple(e for e in NETWORK_EFFECTS if e.used(hw)) if sampled else ()
        takes = next((e for e in effects if e.takes_read(hw)), None)
        v0 = next((v for e in effects if (v := e.voltage(hw, delta_v_v)) is not None), None)
        return cls(effects, takes, any(e.solves_read(hw) for e in effects), v0)


@dataclass(frozen=True)
class ReadSetup:
    """How a layer reads, fixed when it is programmed."""

    grid: TileGrid
    hw: HardwareSpec
    coding: InputCoding  # the input code (its sign read once from the fitted buffer)
    delta_x: float  # the fitted DAC step (a host scalar: no device sync per read)
    delta_v_v: float  # the DAC step in volts
    layer_index: int
    fold: bool  # a linear read may fold into one weight (no calibration observer, folding allowed)
    recording: bool  # programmed under a calibration observer: the read records its sensed values, no ADC
    mmse: bool  # an MMSE output stage is set (the read is not linear)
    zero_outputs: torch.Tensor | None  # Yu eq. 11, folded into the weight
    solve_max_bytes: int | None
    fit_adc: Callable[[torch.Tensor], ADC] | None = None  # a column ADC fitted to each read (crossbar training)


@dataclass(frozen=True)
class ProgrammedState:
    """Per-instance read operands derived from the cells once, reused by every read."""

    cells: LayerCells
    op: MatmulTiles | ConvTiles
    delta_x: float
    coding: InputCoding
    plane_coef: torch.Tensor  # (planes,) shift-and-add weights of the DAC chunks, on the device
    slice_coef: torch.Tensor  # (slices,) shift-and-add weights 2**(b s), float32 on the device
    h_eff: torch.Tensor  # logical G_eff of the cells (above G_min, dG units)
    path: ReadPath  # how it is read (engine.reads), chosen once
    zero_outputs: torch.Tensor | None = None  # (groups * n,) bool: Yu eq. 11 outputs read as 0
    iv_v0: float | None = None  # sinh I-V: V_0 in units of the DAC step (None: linear cells)
    fold: Callable[[], torch.Tensor] | None = None  # the folded read's W_eff (w_eff), made on first use
    currents: BitLineCurrents | None = None  # the network phase: DAC voltages -> bit-line currents
    precombined: bool = False  # the operand holds sensed conductances (analog subtraction, linear sensing)
    correction_matrix: torch.Tensor | None = None  # (I, G, t_r, R, Q) sensed digital correction (EC)
    gens: list[torch.Generator] | None = None  # per-instance per-read noise streams (None: noiseless)
    read_effects: tuple[tuple[ReadEffect, Mapping[str, Any]], ...] = ()  # bit-line effects in use, their operands
    column_effects: tuple[ReadEffect, ...] = ()  # per-read effects on the sensed column values
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """An operand that needs a later fit (the ADC), built once per state on first use."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def memoised(self, key: str) -> bool:
        return key in self._memo

    @property
    def w_eff(self) -> torch.Tensor | None:
        """(I, G, k, n) folded weight in units of dw (the folded read; may be a view), made from the
        cells on first use: a kernel weight written with the cells (:meth:`seed_kernel_weight`)
        leaves it unmade unless a later output gain or scale needs it."""
        return None if self.fold is None else self.memo("w_eff", self.fold)

    def seed_kernel_weight(self, scale: float, weight: torch.Tensor) -> None:
        """The folded read's kernel weight at ``scale`` (dx dw) without output gain, written with the
        cells (:class:`engine.tiling.KernelFold`): the reads use it as if they had made it."""
        self._memo[KERNEL_WEIGHT] = [(scale, None, weight)]


def effect_registries() -> tuple[tuple[ReadEffect, ...], tuple[NetworkEffect, ...]]:
    """The per-read and network effects plans are made from, as this module sees them now (an effect
    added at run time through :mod:`engine.nonideal`'s protocol is planned with)."""
    return READ_EFFECTS, NETWORK_EFFECTS


@dataclass(frozen=True)
class ReadPlan:
    """What a programming derives from its :class:`ReadSetup` alone, before any cell value: the
    network plan, the per-read effects in use, the tile operator, the shift-and-add weights and the
    read path. A layer keeps it while its setup is unchanged (the same hardware, fitted scalars and
    output stage), so re-programming a new instance only derives the operands of its cells."""

    setup: ReadSetup
    network: NetworkPlan
    op: MatmulTiles | ConvTiles
    effects: tuple[ReadEffect, ...]  # per-read effects in use (sampled cells only)
    read_effects: tuple[ReadEffect, ...]  # those on the cells' raw bit-line currents
    column_effects: tuple[ReadEffect, ...]  # those on the sensed column values
    plane_coef: torch.Tensor  # (planes,) shift-and-add weights of the DAC chunks, on the device
    slice_coef: torch.Tensor  # (slices,) shift-and-add weights 2**(b s), float32 on the device
    path: ReadPath
    precombined: bool  # analog subtraction, linear sensing: the operand holds sensed conductances

    @classmethod
    def of(
        cls,
        setup: ReadSetup,
        sampled: bool,
        device: torch.device,
        make_op: Callable[[bool], MatmulTiles | ConvTiles],
    ) -> ReadPlan:
        """``sampled``: cells of a sampled instance (else the ideal crossbar: no effect acts);
        ``make_op(cell_draws)``: the layer's tile operator."""
        hw, grid = setup.hw, setup.grid
        effects = tuple(e for e in READ_EFFECTS if e.used(hw)) if sampled else ()
        read_effects = tuple(e for e in effects if e.stage == "bit_line")
        network = NetworkPlan.of(hw, sampled, setup.delta_v_v)
        noisy = bool(effects)  # hw.any_read_noise on a sampled instance, from the one scan
        direct = network.takes_read is None and network.iv_v0 is None  # the tile contraction, linear cells
        linear = hw.adc.kind == "ideal" and not noisy and direct and not setup.mmse
        precombined = hw.adc.subtract == "analog" and not read_effects and network.takes_read is None
        path = choose(
            linear=linear,
            fold=setup.fold,
            digitisable=precombined and not noisy,  # the noiseless quantised read of precombined operands
            adc_kind=hw.adc.kind,
            recording=setup.recording,
            mmse=setup.mmse,
            fit_adc=setup.fit_adc,
        )
        return cls(
            setup=setup,
            network=network,
            op=make_op(any(e.needs_cell_draws(hw) for e in read_effects) or network.takes_read is not None),
            effects=effects,
            read_effects=read_effects,
            column_effects=tuple(e for e in effects if e.stage == "column"),
            plane_coef=coefficients(setup.coding.planes, setup.coding.dac_bits, device),
            slice_coef=coefficients(grid.slices, hw.device.bits_per_cell, device),
            path=path,
            precombined=precombined,
        )


def program_state(
    plan: ReadPlan, cells: LayerCells, h_eff: torch.Tensor, read_streams: list[torch.Generator] | None = None
) -> ProgrammedState:
    """The programmed state of ``cells`` (sampled as ``plan`` says) whose logical G_eff is ``h_eff``
    (the cells themselves when reads solve the network), read as ``plan`` says. ``read_streams``:
    generators the per-read noise continues from (default: the instances' own)."""
    setup, op = plan.setup, plan.op
    hw, grid = setup.hw, setup.grid
    base: dict[str, Any] = dict(
        cells=cells,
        op=op,
        delta_x=setup.delta_x,
        coding=setup.coding,
        plane_coef=plan.plane_coef,
        slice_coef=plan.slice_coef,
        h_eff=h_eff,
        iv_v0=plan.network.iv_v0,
        zero_outputs=setup.zero_outputs,
        path=plan.path,
        column_effects=plan.column_effects,
    )
    corr = None
    if cells.correction is not None:
        corr = sense(to_logical(cells.correction, cells)[..., : grid.used_cols].permute(*READ_LAYOUT), grid)
    if isinstance(plan.path, FoldedRead):  # noiseless: the fold is all a read needs, made on first use
        base["fold"] = functools.partial(_folded, h_eff, grid, plan.slice_coef, setup.zero_outputs, corr)
        return ProgrammedState(**base)
    raw = h_eff[..., : grid.used_cols].permute(*READ_LAYOUT)  # (I, G, t_r, R, A, t_c, used)
    i, g, tr, r = raw.shape[:4]
    g_min_n = hw.device.g_min_n
    if corr is not None:
        base["correction_matrix"] = corr.reshape(i, g, tr, r, -1)
    base["precombined"] = plan.precombined
    takes_read = plan.network.takes_read
    if takes_read is not None:  # the effect builds its operands from the physical cells
        ctx = NetworkContext(
            op, grid, hw, cells.h, h_eff, raw, setup.delta_v_v, setup.coding.max_chunk, setup.solve_max_bytes
        )
        base["currents"] = takes_read.currents(ctx)
    else:
        if plan.precombined:  # sensing is linear: subtract the conductances once, not per read
            mat = sense(raw, grid)
        elif hw.adc.subtract == "digital":  # every column is digitised with its G_min current
            mat = raw + g_min_n
        else:  # analog subtraction cancels G_min exactly
            mat = raw
        # precombined: the operand is built on first use (the digitised read has its own)
        base["currents"] = TileCurrents(op, mat.reshape(i, g, tr, r, -1), eager=not plan.precombined)
    if plan.read_effects:
        g_phys = (raw + g_min_n).reshape(i, g, tr, r, -1)

        def target_rel() -> torch.Tensor:  # the cells' target levels / G_max, in g_phys' layout
            assert cells.levels is not None  # sampled cells keep their targets
            levels = cells.levels if cells.levels.dim() == 7 else cells.levels.unsqueeze(0)
            levels = to_logical(levels.to(raw.dtype).expand_as(cells.h), cells)[..., : grid.used_cols]
            g_rel = (levels.permute(*READ_LAYOUT) + g_min_n) * (hw.device.delta_g_s / hw.device.g_max_s)
            return g_rel.reshape(i, g, tr, r, -1)

        pctx = ProgramContext(g_phys, op, target_rel, hw)
        base["read_effects"] = tuple((e, e.operands(pctx)) for e in plan.read_effects)
    if plan.effects:
        assert cells.seeds is not None
        base["gens"] = read_streams or read_noise_streams(cells.seeds, setup.layer_index, cells.h.device)
    return ProgrammedState(**base)


def _folded(
    h_eff: torch.Tensor,
    grid: TileGrid,
    slice_coef: torch.Tensor,
    zero_outputs: torch.Tensor | None,
    corr: torch.Tensor | None,
) -> torch.Tensor:
    """The folded read's (I, G, k, n) W_eff in units of dw from the logical G_eff (cells' layout):
    sensed (exact with an ideal ADC), plus the digital correction, shifted and added over slices
    (PytorX eq. 3, Yu eq. 2), zeroed outputs masked (Yu eq. 11)."""
    raw = h_eff[..., : grid.used_cols].permute(*READ_LAYOUT)  # (I, G, t_r, R, A, t_c, used)
    i, g, tr, r = raw.shape[:4]
    sensed = sense(raw, grid, contiguous=True)  # row-major, so the reshapes below are views
    if corr is not None:
        sensed = sensed + corr
    # (I,G,t_r,R,t_c,wcols); one slice needs no shift-and-add pass
    folded = sensed[..., 0] if grid.slices == 1 else (sensed * slice_coef).sum(-1)
    folded = folded.reshape(i, g, tr * r, grid.t_c * grid.wcols)
    w_eff = folded[:, :, : grid.k, : grid.n]  # a view: the kernel's weight is written from it in one pass
    if zero_outputs is not None:
        w_eff = w_eff.masked_fill(zero_outputs.view(grid.groups, 1, grid.n), 0.0)
    return w_eff


def read_noise_streams(seeds: tuple[int, ...], layer_index: int, device: torch.device) -> list[torch.Generator]:
    """Each instance's per-read noise stream of this layer, from its start."""
    return [seeding.torch_generator(s, layer_index, seeding.READ_NOISE, device) for s in seeds]
