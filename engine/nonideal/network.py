"""The network phase of a read: the wires and drivers between the DACs and the bit lines.

Where static effects change what a cell holds and read effects add noise to a read, a network
effect shapes the read itself; each is one object of :class:`NetworkEffect` with one method per
phase it acts in:

* at programming, ``effective`` turns the programmed conductances into the effective conductances
  the tile contraction reads (wire, sense and driver resistance: :class:`engine.nonideal.wires.WireResistance`);
* at programming, ``currents`` may take over the read: a :class:`BitLineCurrents` object, chosen once,
  that turns each read's DAC voltages into raw bit-line currents (RxNN's loaded DAC:
  :class:`engine.nonideal.dac_loading.DacLoading`; the sinh I-V under exact wires, a Newton solve per
  input vector: :class:`engine.nonideal.iv.SinhIV`); otherwise the read is the tile contraction
  :class:`TileCurrents`, v @ G_eff;
* per read, ``voltage`` may transform the DAC voltages the cells see (the sinh I-V without wires).

``engine.crossbar`` asks the effects of :data:`engine.nonideal.NETWORK_EFFECTS` and names none.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from ..hardware import HardwareSpec
    from ..tiling import TileGrid
    from .iv import NewtonReport


class BitLineCurrents(ABC):
    """How one read's DAC voltages become raw bit-line currents (I, G, t_r, P*M, Q), engine units
    (dG x DAC step); chosen when a layer is programmed. ``v``: the voltages the cells see (after a
    ``voltage`` transform), ``v_rows``: the DAC's, both in the tile-row layout of ``engine.tile_ops``."""

    report: NewtonReport | None = None  # an iterative network solve's slowest convergence so far

    @abstractmethod
    def __call__(self, v: torch.Tensor, v_rows: torch.Tensor) -> torch.Tensor: ...


class TileCurrents(BitLineCurrents):
    """The linear read: v @ G_eff tile by tile (the IR-drop seam). ``matrix`` (I, G, t_r, R, Q) is the
    operand as sensing wants it; its operator layout is built on first use (or now: ``eager``)."""

    def __init__(self, op: Any, matrix: torch.Tensor, eager: bool) -> None:
        self.op, self.matrix = op, matrix
        self._operand = op.operand(matrix) if eager else None

    @property
    def operand(self) -> torch.Tensor:
        if self._operand is None:
            self._operand = self.op.operand(self.matrix)
        return self._operand

    def __call__(self, v: torch.Tensor, v_rows: torch.Tensor) -> torch.Tensor:
        return self.op.apply(v, self.operand)  # (I, G, t_r, P*M, Q)


@dataclass(frozen=True)
class NetworkContext:
    """What programming offers a network effect: the tile operator and grid, the hardware, the
    physical cells ``h`` (I, A, G, t_r, t_c, R, C) and the logical G_eff ``h_eff`` (dG above G_min),
    ``raw`` = h_eff's used columns in the read layout (I, G, t_r, R, A, t_c, used), the DAC step in
    volts and its largest chunk, and the solve memory budget."""

    op: Any
    grid: TileGrid
    hw: HardwareSpec
    h: torch.Tensor
    h_eff: torch.Tensor
    raw: torch.Tensor
    delta_v_v: float
    max_chunk: int
    max_bytes: int | None


class NetworkEffect(ABC):
    """One effect of the cell network (see the module docstring). ``used`` says whether it acts on a
    sampled instance of ``hw``; the phases a subclass does not override leave the read as it is."""

    name: str
    changes_g_eff: ClassVar[bool] = False  # True: ``effective`` acts (programming asks only those)

    def used(self, hw: HardwareSpec) -> bool:
        raise NotImplementedError

    def takes_read(self, hw: HardwareSpec) -> bool:
        """True when :meth:`currents` replaces the tile contraction (its operands are then built from
        the physical cells, per array tile)."""
        return False

    def solves_read(self, hw: HardwareSpec) -> bool:
        """True when each read solves the network itself (input-dependent): there is then no G_eff."""
        return False

    def effective(self, h: torch.Tensor, hw: HardwareSpec, max_bytes: int | None) -> torch.Tensor:
        """G_eff (dG above G_min) of programmed cells h (only asked when ``changes_g_eff``)."""
        return h

    def currents(self, ctx: NetworkContext) -> BitLineCurrents | None:
        """The read's bit-line currents, or None: this effect leaves the tile contraction."""
        return None

    def voltage(self, hw: HardwareSpec, delta_v_v: float) -> float | None:
        """V_0 in DAC steps when the cells see V_0 sinh(V / V_0) (None: the DAC voltage itself)."""
        return None
