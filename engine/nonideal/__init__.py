"""One module per non-ideality: static draws (faults, variation, drift), per-read noise and the cell
network (wires, loaded DACs, the sinh I-V).

Effects follow the protocol of :mod:`engine.nonideal.base`. :data:`STATIC_EFFECTS` lists the static
ones in the order programming applies them (conductance effects first, then level effects: stuck
cells last); :data:`READ_EFFECTS` the per-read ones in the order each read draws them;
:data:`NETWORK_EFFECTS` those that shape the read itself (:mod:`engine.nonideal.network`).
"""

from __future__ import annotations

from ..seeding import READ_NOISE, WRITE_NOISE
from .awgn import ColumnAWGN
from .base import ProgramContext, ReadContext, ReadEffect, StaticEffect, Stream
from .dac_loading import DacLoading
from .drift import Drift, Flicker
from .faults import StuckAt
from .fluctuation import ReadFluctuation
from .iv import SinhIV
from .network import BitLineCurrents, NetworkContext, NetworkEffect, TileCurrents
from .telegraph import Telegraph
from .thermal_shot import ThermalShot
from .variation import Variation
from .wires import WireResistance

STATIC_EFFECTS: tuple[StaticEffect, ...] = (Variation(), Drift(), StuckAt())
# per-read effects, in the order their currents are drawn from an instance's per-read stream (bit-line
# effects on the raw currents, then column effects on the sensed values)
READ_EFFECTS: tuple[ReadEffect, ...] = (Flicker(), ReadFluctuation(), ThermalShot(), Telegraph(), ColumnAWGN())
# the cell network between DACs and bit lines: G_eff at programming, then at most one effect takes the
# read over (validation refuses DAC loading with the sinh I-V)
NETWORK_EFFECTS: tuple[NetworkEffect, ...] = (WireResistance(), SinhIV(), DacLoading())

_indices = [s.index for e in STATIC_EFFECTS for s in e.streams] + [READ_NOISE, WRITE_NOISE]
assert len(_indices) == len(set(_indices)), "every stream has its own index"

__all__ = [
    "NETWORK_EFFECTS",
    "READ_EFFECTS",
    "STATIC_EFFECTS",
    "BitLineCurrents",
    "NetworkContext",
    "NetworkEffect",
    "ProgramContext",
    "ReadContext",
    "ReadEffect",
    "StaticEffect",
    "Stream",
    "TileCurrents",
]
