"""The non-ideality protocol: each effect is an object that says when it acts and which random
streams it draws, with one method per phase.

Static effects (:class:`StaticEffect`) act once, when an instance is programmed: every cell of a
layer gets its draws from the effect's declared counter streams (:mod:`engine.counter_rng`, keyed
by (instance seed, layer, stream index) and indexed by the cell), and the effect then changes the
programmed conductance. ``engine.instance`` hashes the streams in use and applies the effects of
:data:`engine.nonideal.STATIC_EFFECTS` in their order; it names no effect itself.

Read effects (:class:`ReadEffect`) act on every read: operands built once per programmed state
from the physical conductances, and a bit-line current drawn per read from the instance's per-read
stream. ``engine.crossbar`` builds and adds those of :data:`engine.nonideal.READ_EFFECTS` in order.

Adding an effect: a module here with its spec section in ``engine.hardware``, a class of one of the
two kinds, and its place in ``STATIC_EFFECTS`` or ``READ_EFFECTS`` (a static effect declares a new,
never reused stream index).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch

    from ..hardware import HardwareSpec


@dataclass(frozen=True)
class Stream:
    """One stream of static draws, a value per cell: ``index`` keys the counter hash (part of the
    draw scheme: never renumber or reuse one), ``kind`` its transform - a standard normal
    (Box-Muller, :func:`engine.counter_rng.normal`) or 0/1 indicators of integer intervals of the
    32-bit draw (:func:`engine.counter_rng.indicators`, the intervals from :meth:`StaticEffect.intervals`)."""

    name: str
    index: int
    kind: Literal["normal", "intervals"]


Draws = Mapping[str, "torch.Tensor"]  # stream name (or a name its effect derives) -> (I, *cell_shape)


class StaticEffect:
    """An effect of programming. ``acts_on``: ``conductance`` effects change g = G / dG (G_min
    included) in order; ``level`` effects then change h = g - G_min / dG (e.g. stuck cells overwrite
    whatever was programmed)."""

    name: ClassVar[str]
    streams: ClassVar[tuple[Stream, ...]]
    acts_on: ClassVar[Literal["conductance", "level"]] = "conductance"
    needs_target: ClassVar[bool] = False  # reads ``target`` (then a copy, not the g being changed)

    def used(self, hw: HardwareSpec) -> tuple[Stream, ...]:
        """The streams this hardware draws (none: the effect is off)."""
        raise NotImplementedError

    def intervals(self, stream: Stream, hw: HardwareSpec) -> dict[str, tuple[int, int]]:
        """An ``intervals`` stream's named half-open intervals [a, b) of the 32-bit draw (0 <= a <= b <=
        2**32): each name becomes a float32 0/1 draw per cell (whether the draw lies in it)."""
        raise NotImplementedError

    def derive(self, raw: Draws, hw: HardwareSpec) -> Draws:
        """Per-instance quantities made once from the raw draws of every layer (default: the draws)."""
        return raw

    def program(self, g: torch.Tensor, target: torch.Tensor, draws: Draws, hw: HardwareSpec) -> torch.Tensor:
        """Change ``g`` (a fresh tensor, in place) given the target (same units, broadcastable) and
        this effect's draws (:meth:`derive` output) of one layer."""
        raise NotImplementedError


@dataclass(frozen=True)
class ProgramContext:
    """What a read effect may use when an instance is programmed (one layer): the physical
    conductances of every read column, g = h + G_min in dG units, (I, G, t_r, R, Q) with Q = arrays x
    column tiles x used columns; the tile operator that turns such a matrix into a read operand; the
    targets relative to G_max in the same layout (made on request); the hardware."""

    g_phys: torch.Tensor
    op: Any  # engine.tile_ops.MatmulTiles | ConvTiles
    target_rel: Callable[[], torch.Tensor]
    hw: HardwareSpec


@dataclass(frozen=True)
class ReadContext:
    """What a read effect may use on every read: the tile operator, the instances' per-read
    generators behind ``randn`` / ``rand`` (shape, like) -> (I, *shape[1:]) draws, the DAC step in volts."""

    op: Any
    randn: Callable[[torch.Size | tuple[int, ...], torch.Tensor], torch.Tensor]
    rand: Callable[[torch.Size | tuple[int, ...], torch.Tensor], torch.Tensor]
    delta_v_v: float
    hw: HardwareSpec


class ReadEffect:
    """An effect of every read: operands built once per programmed state (:meth:`operands`), and a
    current added on each read (:meth:`add_noise`), drawn from the instance's per-read stream
    (``engine.seeding.READ_NOISE``) in :data:`engine.nonideal.READ_EFFECTS` order."""

    name: ClassVar[str]
    # where its current joins: the raw bit-line currents of the cells (before sensing and subtraction),
    # or every sensed column value (after them, before the ADC)
    stage: ClassVar[Literal["bit_line", "column"]] = "bit_line"

    def used(self, hw: HardwareSpec) -> bool:
        raise NotImplementedError

    def needs_cell_draws(self, hw: HardwareSpec) -> bool:
        """Whether reads need the per-cell matrix (a draw per cell and read), not a tile operand."""
        return False

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        raise NotImplementedError

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        """``current`` plus this effect's currents, engine units: bit-line currents (I, G, t_r, P*M, Q)
        for row voltages ``v`` (I, G, t_r, P*M, R) in DAC steps, or (``stage: column``) one per sensed
        column value of ``current``. Added term by term, left to right, so the sum does not depend on
        how an effect groups its terms."""
        raise NotImplementedError
