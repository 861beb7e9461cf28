"""Non-linear cell I-V: I = G V_0 sinh(V / V_0) (``hardware.iv.model: sinh``).

The form is the conduction term of the Stanford/PKU RRAM compact model, I = I_0 exp(-gap/g_0)
sinh(V/V_0) (Guan, Yu, Wong, IEEE EDL 33, 1405 (2012); V_0 = 0.25 V there), written with the
programmed small-signal conductance G = I_0 exp(-gap/g_0) / V_0, so G is what a low-voltage read
sees and V_0 -> infinity is the linear cell. CrossSim and MemTorch offer the same choice.

Without wire resistance every cell sees its row voltage, so a column current is
sum_i G_ij V_0 sinh(V_i / V_0): linear in G for the transformed input :func:`sinh_voltage`, and
the engine reads it through the same tiles. With wire / sense / driver resistance the network is
non-linear and its currents depend on each input vector: :func:`network_currents` solves Kirchhoff's
current law by Newton's method, each step one linear solve of the same block-tridiagonal network
(:func:`engine.irdrop.solve_network`) with the cells replaced by their tangent conductances
G cosh(d / V_0), d the cell voltage, and the residual currents injected at the nodes.
:func:`reference_currents` is the independent check: scipy's root finder on the full nodal
equations of one tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt
import scipy.sparse.linalg as spla
import torch

from ..hardware import HardwareSpec
from ..irdrop import (
    TileWires,
    _column_shunts,
    _nodal_system,
    _row_laplacian,
    default_solve_bytes,
    network_bytes_per_system,
    solve_network,
)
from ..tiling import READ_LAYOUT, TileGrid
from .network import BitLineCurrents, NetworkContext, NetworkEffect
from .wires import tile_wires


def sinh_voltage(v: torch.Tensor, v0: float) -> torch.Tensor:
    """V_0 sinh(V / V_0): the voltage a linear cell would need to carry the same current."""
    return v0 * torch.sinh(v / v0)


@dataclass(frozen=True)
class NewtonReport:
    """How the non-linear network solve ended: iterations of the slowest system and its last
    voltage update relative to the largest input voltage."""

    iterations: int
    max_update: float
    tolerance: float


class NonlinearSolveError(RuntimeError):
    """Newton's method did not reach the tolerance within the iteration limit."""


def _residual(
    a: torch.Tensor,
    b: torch.Tensor,
    g: torch.Tensor,
    v: torch.Tensor,
    w: TileWires,
    v0: float,
    lap: torch.Tensor,
    c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KCL: currents leaving each row node (F_a) and column node (F_b); zero at the solution."""
    j = g * v0 * torch.sinh((a - b) / v0)
    fa = a @ lap + j  # lap is symmetric: (lap a_i) for every row i at once
    fa[..., 0] -= w.g_in * v
    fb = c.view(1, -1, 1) * b - j
    fb[:, 1:] -= w.g_col * b[:, :-1]
    fb[:, :-1] -= w.g_col * b[:, 1:]
    return fa, fb


def network_currents(
    g: torch.Tensor,
    v: torch.Tensor,
    w: TileWires,
    v0: float,
    *,
    rtol: float = 1e-10,
    max_iter: int = 50,
    max_bytes: int | None = None,
) -> tuple[torch.Tensor, NewtonReport]:
    """Bit-line currents (S, K, N) in amperes of S tiles g (S, M, N) siemens, each driven by K input
    vectors v (S, K, M) volts; cells I = G V_0 sinh(V/V_0), exact wires ``w``.

    Newton from zero (its first step is the linear network's solution); steps are limited to 2 V_0 of
    cell voltage per iteration (SPICE-style limiting: sinh grows too fast for full steps far from the
    solution). Converged when every node's update is <= ``rtol`` x max|V| of its system; otherwise
    :class:`NonlinearSolveError`. The S x K systems are solved in chunks within ``max_bytes``."""
    s, k, m = v.shape
    n = g.shape[-1]
    budget = default_solve_bytes(g.device) if max_bytes is None else int(max_bytes)
    chunk = max(1, budget // network_bytes_per_system(m, n))
    out = torch.empty((s * k, n), dtype=torch.float64, device=g.device)
    flat_v = v.reshape(s * k, m)
    worst = NewtonReport(0, 0.0, rtol)
    for start in range(0, s * k, chunk):  # chunks of systems: bounded memory, not a per-tile loop
        rows = torch.arange(start, min(start + chunk, s * k), device=g.device)
        cur, rep = _newton(g[rows // k].double(), flat_v[rows].double(), w, v0, rtol, max_iter)
        out[start : start + rows.numel()] = cur
        worst = NewtonReport(max(rep.iterations, worst.iterations), max(rep.max_update, worst.max_update), rtol)
    return out.reshape(s, k, n), worst


def _newton(
    g: torch.Tensor, v: torch.Tensor, w: TileWires, v0: float, rtol: float, max_iter: int
) -> tuple[torch.Tensor, NewtonReport]:
    t, m, n = g.shape
    lap = _row_laplacian(n, w, g)
    c = torch.tensor(_column_shunts(m, w), dtype=g.dtype, device=g.device)
    a, b = torch.zeros_like(g), torch.zeros_like(g)
    scale = v.abs().amax(-1).clamp_min(torch.finfo(g.dtype).tiny).view(t, 1, 1)
    update = float("inf")
    for it in range(1, max_iter + 1):
        fa, fb = _residual(a, b, g, v, w, v0, lap, c)
        tangent = g * torch.cosh((a - b) / v0)
        da, db = solve_network(tangent, -fa, -fb, w)
        step = (da - db).abs().amax((-1, -2), keepdim=True)
        alpha = (2 * v0 / step.clamp_min(torch.finfo(g.dtype).tiny)).clamp(max=1.0)
        a, b = a + alpha * da, b + alpha * db
        rel = torch.maximum(da.abs().amax((-1, -2), keepdim=True), db.abs().amax((-1, -2), keepdim=True)) / scale
        update = float((alpha * rel).max())
        if update <= rtol and bool((alpha == 1).all()):
            return w.g_out * b[:, -1], NewtonReport(it, update, rtol)
    raise NonlinearSolveError(
        f"non-linear I-V network solve did not converge: node update {update:.3g} x max|V| after {max_iter} Newton "
        f"iterations (tolerance {rtol:g}); raise hardware.iv.newton_max_iter, loosen hardware.iv.newton_rtol, "
        f"or lower input.v_read_v / iv.v0_v"
    )


class NewtonCurrents(BitLineCurrents):
    """Raw bit-line currents of sinh I-V cells under exact IR drop: every whole tile (unused cells
    included) and input vector solved by Newton's method (:func:`network_currents`), physical
    currents including G_min's, in engine units. ``g`` (I, A, G, t_r, t_c, R, C) siemens."""

    def __init__(
        self, g: torch.Tensor, grid: TileGrid, hw: HardwareSpec, delta_v_v: float, max_bytes: int | None
    ) -> None:
        self.g, self.grid, self.hw, self.delta_v_v, self.max_bytes = g, grid, hw, delta_v_v, max_bytes
        self.report: NewtonReport | None = None

    def __call__(self, v: torch.Tensor, v_rows: torch.Tensor) -> torch.Tensor:
        grid, hw, g = self.grid, self.hw, self.g
        i, a, gg, tr, tc, r, c = g.shape
        pm = v_rows.shape[3]
        volts = (v_rows.double() * self.delta_v_v).unsqueeze(1).unsqueeze(4).expand(i, a, gg, tr, tc, pm, r)
        amps, report = network_currents(
            g.reshape(-1, r, c),
            volts.reshape(-1, pm, r),
            tile_wires(hw),
            hw.iv.v0_v,
            rtol=hw.iv.newton_rtol,
            max_iter=hw.iv.newton_max_iter,
            max_bytes=self.max_bytes,
        )
        if self.report is None or report.iterations > self.report.iterations:
            self.report = report
        cur = (amps / (hw.device.delta_g_s * self.delta_v_v)).to(v_rows.dtype).reshape(i, a, gg, tr, tc, pm, c)
        cur = cur[..., : grid.used_cols].permute(*READ_LAYOUT)  # (I, G, t_r, P*M, A, t_c, used)
        return cur.reshape(i, gg, tr, pm, -1)


class SinhIV(NetworkEffect):
    """``hardware.iv.model: sinh``: without wires the cells see V_0 sinh(V / V_0) (the read stays a tile
    contraction); with exact wires each read is a Newton solve (:class:`NewtonCurrents`)."""

    name = "iv"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.iv.model == "sinh"

    def voltage(self, hw: HardwareSpec, delta_v_v: float) -> float | None:
        return hw.iv.v0_v / delta_v_v

    def takes_read(self, hw: HardwareSpec) -> bool:
        return hw.ir_drop.enabled

    def solves_read(self, hw: HardwareSpec) -> bool:
        return hw.ir_drop.enabled

    def currents(self, ctx: NetworkContext) -> BitLineCurrents | None:
        if not ctx.hw.ir_drop.enabled:
            return None
        dev = ctx.hw.device
        g = (ctx.h.double() + dev.g_min_n) * dev.delta_g_s
        return NewtonCurrents(g, ctx.grid, ctx.hw, ctx.delta_v_v, ctx.max_bytes)


def reference_currents(g: np.ndarray, v: np.ndarray, w: TileWires, v0: float) -> np.ndarray:
    """The same network solved independently: scipy.optimize.root (MINPACK hybrd) on the full nodal
    equations of one tile, g (M, N) siemens, v (M,) volts -> bit-line currents (N,) amperes."""
    m, n = g.shape
    wires, src = _nodal_system(np.zeros_like(g), w)  # wires, sense and driver only
    inject = src @ v
    na = m * n

    def fun(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x[:na] - x[na:]
        cur = g.ravel() * v0 * np.sinh(d / v0)
        f = wires @ x - inject
        f[:na] += cur
        f[na:] -= cur
        tangent = np.diag(g.ravel() * np.cosh(d / v0))
        jac = wires.toarray()
        jac[:na, :na] += tangent
        jac[na:, na:] += tangent
        jac[:na, na:] -= tangent
        jac[na:, :na] -= tangent
        return f, jac

    lin, src_g = _nodal_system(g, w)
    x0 = np.asarray(spla.spsolve(lin, src_g @ v))  # start from the linear cell's solution
    sol = sopt.root(fun, x0, jac=True, method="hybr", options={"xtol": 1e-13})
    # MINPACK may stop with "no progress" once the residual is at rounding level: judge by the residual
    current_scale = float(np.abs(g).sum() * np.abs(v).max()) or 1.0
    if not sol.success and np.abs(fun(sol.x)[0]).max() > 1e-12 * current_scale:
        raise NonlinearSolveError(f"reference solve failed: {sol.message}")
    b = sol.x[na:].reshape(m, n)
    return w.g_out * b[m - 1]
