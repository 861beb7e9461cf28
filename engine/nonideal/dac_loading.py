"""RxNN's loaded DAC (Fig. 4; ``hardware.dac_loading``): each row driver is a resistive divider whose
output sags under the row's load, V_out = V / (1 + R_PD G_load (1 - |V| / V_fs)), G_load the row's
total cell conductance in its array tile (physical, G_min included), V_fs the largest DAC chunk.
Exact at 0 and at full scale, low in between. The arrays' G_min currents no longer cancel (their rows
see different voltages), so the read uses the physical conductances."""

from __future__ import annotations

import torch

from ..hardware import HardwareSpec
from .network import BitLineCurrents, NetworkContext, NetworkEffect


class LoadedCurrents(BitLineCurrents):
    """Per array tile row its own loaded voltages: ``blocks`` (I, G, t_r, A*t_c, R, used) physical
    conductances (dG), ``alpha`` (I, G, t_r, A*t_c, 1, R) = R_PD G_load."""

    def __init__(self, blocks: torch.Tensor, alpha: torch.Tensor, max_chunk: int) -> None:
        self.blocks, self.alpha, self.max_chunk = blocks, alpha, max_chunk

    def __call__(self, v: torch.Tensor, v_rows: torch.Tensor) -> torch.Tensor:
        loaded = v.unsqueeze(3) / (1 + self.alpha * (1 - v.abs().unsqueeze(3) / self.max_chunk))
        cur = (loaded @ self.blocks).permute(0, 1, 2, 4, 3, 5)  # (I, G, t_r, P*M, A*t_c, used)
        return cur.reshape(*cur.shape[:4], -1)


class DacLoading(NetworkEffect):
    name = "dac_loading"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.dac_loading.enabled

    def takes_read(self, hw: HardwareSpec) -> bool:
        return True

    def currents(self, ctx: NetworkContext) -> BitLineCurrents:
        hw, grid, raw = ctx.hw, ctx.grid, ctx.raw
        i, g, tr, r = raw.shape[:4]
        g_min_n = hw.device.g_min_n
        blocks = (raw + g_min_n).reshape(i, g, tr, r, grid.arrays * grid.t_c, grid.used_cols)
        blocks = blocks.permute(0, 1, 2, 4, 3, 5).contiguous()  # (I, G, t_r, A*t_c, R, used)
        g_load = (ctx.h_eff + g_min_n).sum(-1) * hw.device.delta_g_s  # (I, A, G, t_r, t_c, R) siemens
        alpha = hw.dac_loading.r_pd_ohm * g_load.permute(0, 2, 3, 1, 4, 5)
        alpha = alpha.reshape(i, g, tr, grid.arrays * grid.t_c, 1, r).to(raw.dtype)
        return LoadedCurrents(blocks, alpha, ctx.max_chunk)
