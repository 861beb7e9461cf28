"""Wire, sense and driver resistance (RxNN Sec. V-B; TxSim's path model): G_eff at programming.

Bit-line currents of a tile are exactly v @ G_eff for a linear resistive network; :mod:`engine.irdrop`
solves the exact nodal network (``ir_drop.model: exact``) or TxSim's per-path approximation
(``path``). Every whole tile enters, unused cells included."""

from __future__ import annotations

import torch

from .. import irdrop
from ..hardware import HardwareSpec
from .network import NetworkEffect


def tile_wires(hw: HardwareSpec) -> irdrop.TileWires:
    ir = hw.ir_drop
    return irdrop.TileWires(ir.r_row_ohm, ir.r_col_ohm, ir.r_sense_ohm, ir.r_driver_ohm)


class WireResistance(NetworkEffect):
    name = "ir_drop"
    changes_g_eff = True

    def used(self, hw: HardwareSpec) -> bool:
        return hw.ir_drop.enabled

    def effective(self, h: torch.Tensor, hw: HardwareSpec, max_bytes: int | None) -> torch.Tensor:
        """G_eff of the programmed cells ``h`` (..., R, C), dG above G_min, in h's dtype."""
        ir, dev = hw.ir_drop, hw.device
        g_min_n = dev.g_min_n
        if ir.model == "path":
            g = (h.double() + g_min_n) * dev.delta_g_s
            return (irdrop.path_model(g, tile_wires(hw)) / dev.delta_g_s - g_min_n).to(h.dtype)
        solver = torch.float32 if ir.solver_dtype == "float32" else torch.float64
        return irdrop.effective_conductance(
            h, tile_wires(hw), max_bytes=max_bytes, dtype=solver, scale=dev.delta_g_s, offset=g_min_n
        )
