"""Exact IR drop and sneak paths (RxNN Sec. V-B): the crossbar with wire, sense and driver
resistances is a linear resistive network, so output currents are exactly I = V . G_eff, with
G_eff a function of the cell conductances and the resistances only.

Circuit of one M x N tile (``TileWires``):
  * row i: source V_i -- R_driver -- r_row -- a[i,1] -- r_row -- a[i,2] ... a[i,N]
  * column j: b[1,j] -- r_col -- b[2,j] ... b[M,j] -- r_col -- R_sense -- virtual ground
  * cell (i,j): conductance G[i,j] between a[i,j] and b[i,j]; I_out[j] = b[M,j] / (r_col + R_sense)
Every cell owns the row segment on its driver side and the column segment on its sense side, so
a 1 x 1 tile is the series 1 / (1/G + R_driver + r_row + r_col + R_sense).

Fast exact solve, batched over any number of tiles (instances x arrays x tiles):
KCL at row nodes gives (L_r + diag G_i) a_i = g_in V_i e_1 + diag(G_i) b_i per row i, with L_r the
row wire's tridiagonal Laplacian. Eliminating a_i leaves a block-tridiagonal system in the column
voltages, with scalar off-diagonal blocks -g_c I:
    S_i b_i - g_c b_{i-1} - g_c b_{i+1} = h_i V_i,
    S_i = diag(G_i) + c_i I - G_i (L_r + G_i)^-1 G_i,   h_i = g_in G_i (L_r + G_i)^-1 e_1.
A block-Thomas forward sweep over the M rows carries the M right-hand sides (one per input) to
the sense end: G_eff^T = g_out S'_M^-1 R_M, with S'_i = S_i - g_c^2 S'_{i-1}^-1 and
R_i = g_c S'_{i-1}^-1 R_{i-1} + h_i e_i^T. Cost O(M (N^3 + N^2 M)) per tile, in float64 (wire
conductances exceed cell conductances by up to 10^7). :func:`node_voltages` adds the back
substitution for given inputs (internal voltages, cell currents, sneak paths).
:func:`reference_solve` is the slow, obviously-correct full nodal system in scipy.sparse.

TxSim's speed-ups for conductances that change every training step (TxSim Sec. IV-D):
:func:`path_model` (approximate analytical model: each cell alone in series with its shortest
path's resistances) and :class:`InterpolatedGEff` (keep the distortion (G - G_eff)/G and re-solve
every L updates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch


@dataclass(frozen=True)
class TileWires:
    r_row_ohm: float
    r_col_ohm: float
    r_sense_ohm: float = 0.0
    r_driver_ohm: float = 0.0

    def __post_init__(self) -> None:
        if self.r_row_ohm <= 0 or self.r_col_ohm <= 0 or self.r_sense_ohm < 0 or self.r_driver_ohm < 0:
            raise ValueError("wire resistances must be > 0 and sense/driver resistances >= 0")

    @property
    def g_in(self) -> float:
        return 1.0 / (self.r_driver_ohm + self.r_row_ohm)

    @property
    def g_row(self) -> float:
        return 1.0 / self.r_row_ohm

    @property
    def g_col(self) -> float:
        return 1.0 / self.r_col_ohm

    @property
    def g_out(self) -> float:
        return 1.0 / (self.r_col_ohm + self.r_sense_ohm)


def _row_laplacian(n: int, w: TileWires, like: torch.Tensor) -> torch.Tensor:
    lap = torch.zeros(n, n, dtype=like.dtype, device=like.device)
    if n == 1:
        lap[0, 0] = w.g_in
        return lap
    idx = torch.arange(n, device=like.device)
    diag = torch.full((n,), 2 * w.g_row, dtype=like.dtype, device=like.device)
    diag[0], diag[-1] = w.g_in + w.g_row, w.g_row
    lap[idx, idx] = diag
    lap[idx[:-1], idx[1:]] = -w.g_row
    lap[idx[1:], idx[:-1]] = -w.g_row
    return lap


def _column_shunts(m: int, w: TileWires) -> list[float]:
    """c_i: conductance from column node i to its column neighbours / the sense."""
    if m == 1:
        return [w.g_out]
    return [w.g_col] + [2 * w.g_col] * (m - 2) + [w.g_col + w.g_out]


def _spd_inverse(a: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(a))


def _row_system(
    g_i: torch.Tensor, c_i: float, w: TileWires, lap: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X_i = (L_r + diag G_i)^-1, S_i and h_i of one row i of every tile; g_i (T, N) siemens."""
    lap = _row_laplacian(g_i.shape[-1], w, g_i) if lap is None else lap
    x = _spd_inverse(lap + torch.diag_embed(g_i))  # (T, N, N)
    s = torch.diag_embed(g_i + c_i) - g_i.unsqueeze(-1) * x * g_i.unsqueeze(-2)
    h = w.g_in * g_i * x[..., :, 0]
    return x, s, h


def solve_bytes_per_tile(m: int, n: int, dtype: torch.dtype = torch.float64) -> int:
    """Peak working memory of :func:`effective_conductance` per tile of m x n cells: about eight
    N x N matrices (row system, its inverse, S_i, the running S'_i, its factor and inverse,
    temporaries) and three N x M right-hand sides, in ``dtype``."""
    return (8 * n * n + 3 * n * m + 4 * n) * torch.empty((), dtype=dtype, device="cpu").element_size()


def default_solve_bytes(device: torch.device) -> int:
    """Budget for one solve when none is given: a quarter of the free memory of ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    import psutil

    return int(psutil.virtual_memory().available // 4)


class SolveBudgetError(ValueError):
    """A single tile's solve does not fit the memory budget."""


def effective_conductance(
    g: torch.Tensor,
    w: TileWires,
    *,
    max_bytes: int | None = None,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
    offset: float = 0.0,
) -> torch.Tensor:
    """G_eff (..., M, N) for conductances g (..., M, N): I_out = V @ G_eff exactly.

    ``g`` and the result are in units of ``scale`` siemens less ``offset`` (G = (g + offset) scale;
    the engine passes h in dG above G_min), converted per chunk so the solver's float64 copy never
    exists for the whole layer. Tiles are solved in chunks whose working memory stays within
    ``max_bytes`` (default: a quarter of the device's free memory), so peak memory does not grow
    with the number of tiles; every tile's arithmetic is the same in any chunk. ``dtype``: float64
    (default) or float32 (wire conductances exceed cell conductances by up to 10^7: see the IR-drop
    benchmark for its error)."""
    lead, (m, n) = g.shape[:-2], g.shape[-2:]
    flat = g.reshape(-1, m, n)
    per_tile = solve_bytes_per_tile(m, n, dtype)
    budget = default_solve_bytes(g.device) if max_bytes is None else int(max_bytes)
    if per_tile > budget:
        raise SolveBudgetError(
            f"one {m}x{n} tile needs {per_tile / 2**20:.2f} MiB to solve; the budget is {budget / 2**20:.2f} MiB"
        )
    chunk = max(1, budget // per_tile)
    out = torch.empty(flat.shape, dtype=g.dtype, device=g.device)
    for start in range(0, flat.shape[0], chunk):  # chunks of tiles: bounded memory, not a per-tile loop
        part = flat[start : start + chunk].to(torch.float64)
        if scale != 1.0 or offset != 0.0:
            part = (part + offset) * scale
        g_eff = _solve(part.to(dtype), w).transpose(-1, -2).to(torch.float64)
        if scale != 1.0 or offset != 0.0:
            g_eff = g_eff / scale - offset
        out[start : start + chunk] = g_eff.to(g.dtype)
    return out.reshape(*lead, m, n)


def _solve(g: torch.Tensor, w: TileWires) -> torch.Tensor:
    """G_eff^T (T, N, M) of a chunk of tiles g (T, M, N): the block-Thomas forward sweep, building
    each row's system when the sweep reaches it (memory O(T N^2), not O(T M N^2))."""
    t, m, n = g.shape
    c = _column_shunts(m, w)
    lap = _row_laplacian(n, w, g)
    _, sp_i, h = _row_system(g[:, 0], c[0], w, lap)
    r = torch.zeros(t, n, m, dtype=g.dtype, device=g.device)
    r[:, :, 0] = h
    for i in range(1, m):  # block-Thomas forward sweep along the columns (batched over tiles)
        inv = _spd_inverse(sp_i)
        _, s_i, h = _row_system(g[:, i], c[i], w, lap)
        sp_i = s_i - (w.g_col**2) * inv
        r = w.g_col * torch.bmm(inv, r)
        r[:, :, i] += h
        del inv, s_i
    return w.g_out * torch.cholesky_solve(r, torch.linalg.cholesky(sp_i))  # (T, N, M)


def solve_network(
    gc: torch.Tensor, p: torch.Tensor, q: torch.Tensor, w: TileWires
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column node voltages (a, b), each (T, M, N), of the tile network with cell
    conductances ``gc`` (T, M, N) and currents ``p`` injected at the row nodes and ``q`` at the
    column nodes (sources grounded: a row source V_i enters as p[:, i, 0] = g_in V_i). The same
    block-Thomas elimination as :func:`effective_conductance`, with a general right-hand side:
        a_i = X_i (p_i + G_i b_i),   S_i b_i - g_c (b_{i-1} + b_{i+1}) = q_i + G_i X_i p_i.
    It is the Jacobian solve of the non-linear I-V network (:mod:`engine.nonideal.iv`), whose cell
    conductances differ per input vector. float64, memory O(T M N^2)."""
    t, m, n = gc.shape
    c = _column_shunts(m, w)
    lap = _row_laplacian(n, w, gc)
    xs: list[torch.Tensor] = []
    col_chol: list[torch.Tensor] = []
    rhs: list[torch.Tensor] = []
    for i in range(m):  # forward sweep down the columns (batched over systems)
        x, s, _ = _row_system(gc[:, i], c[i], w, lap)
        r = q[:, i] + gc[:, i] * (x @ p[:, i].unsqueeze(-1)).squeeze(-1)
        if i > 0:
            s = s - (w.g_col**2) * torch.cholesky_inverse(col_chol[-1])
            r = r + w.g_col * torch.cholesky_solve(rhs[-1].unsqueeze(-1), col_chol[-1]).squeeze(-1)
        xs.append(x)
        col_chol.append(torch.linalg.cholesky(s))
        rhs.append(r)
    b: list[torch.Tensor] = [gc.new_zeros(0)] * m
    for i in range(m - 1, -1, -1):  # back substitution
        r = rhs[i] if i == m - 1 else rhs[i] + w.g_col * b[i + 1]
        b[i] = torch.cholesky_solve(r.unsqueeze(-1), col_chol[i]).squeeze(-1)
    bb = torch.stack(b, dim=1)
    a = (torch.stack(xs, dim=1) @ (p + gc * bb).unsqueeze(-1)).squeeze(-1)  # a_i = X_i (p_i + G_i b_i), all rows
    return a, bb


def network_bytes_per_system(m: int, n: int) -> int:
    """Working memory of one :func:`solve_network` system (X_i and a Cholesky factor per row, float64)."""
    return (2 * m * n * n + 4 * n * n + 8 * m * n) * 8


def node_voltages(g: torch.Tensor, v: torch.Tensor, w: TileWires) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column node voltages (a, b), each (T, M, N), for conductances g (T, M, N) and
    inputs v (T, M): :func:`solve_network` with the row sources as the only injections."""
    g64 = g.to(torch.float64)
    p = torch.zeros_like(g64)
    p[..., 0] = w.g_in * v.to(torch.float64)
    return solve_network(g64, p, torch.zeros_like(g64), w)


def reference_solve(g: np.ndarray, v: np.ndarray, w: TileWires) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full modified nodal analysis with scipy.sparse and a direct solve, for one tile.

    g (M, N) siemens, v (M,) volts, or (M, K) for K input vectors at once. Unknowns: a[i,j] then
    b[i,j]. Returns (a, b, I_out) with a leading K axis when v is 2-D.
    """
    mat, src = _nodal_system(g, w)
    m, n = g.shape
    x = spla.spsolve(mat, src @ (v if v.ndim == 2 else v[:, None]))
    x = np.asarray(x).reshape(2 * m * n, -1).T  # (K, 2MN)
    a, b = x[:, : m * n].reshape(-1, m, n), x[:, m * n :].reshape(-1, m, n)
    out = w.g_out * b[:, m - 1]
    return (a, b, out) if v.ndim == 2 else (a[0], b[0], out[0])


def _nodal_system(g: np.ndarray, w: TileWires) -> tuple[sp.csc_matrix, np.ndarray]:
    """Nodal conductance matrix and the (2MN, M) map from row source voltages to injected currents."""
    m, n = g.shape
    na = m * n
    ia = lambda i, j: i * n + j  # noqa: E731
    ib = lambda i, j: na + i * n + j  # noqa: E731
    rows, cols, vals = [], [], []

    def conduct(p: int, q: int | None, c: float) -> None:
        """Stamp conductance c between unknowns p and q (q None: to a fixed 0 V node)."""
        rows.append(p)
        cols.append(p)
        vals.append(c)
        if q is not None:
            rows.extend([q, p, q])
            cols.extend([q, q, p])
            vals.extend([c, -c, -c])

    src = np.zeros((2 * na, m))
    for i in range(m):
        conduct(ia(i, 0), None, w.g_in)
        src[ia(i, 0), i] = w.g_in
        for j in range(n - 1):
            conduct(ia(i, j), ia(i, j + 1), w.g_row)
        for j in range(n):
            conduct(ia(i, j), ib(i, j), g[i, j])
    for j in range(n):
        for i in range(m - 1):
            conduct(ib(i, j), ib(i + 1, j), w.g_col)
        conduct(ib(m - 1, j), None, w.g_out)
    return sp.csc_matrix((vals, (rows, cols)), shape=(2 * na, 2 * na)), src


def reference_effective_conductance(g: np.ndarray, w: TileWires) -> np.ndarray:
    """G_eff of one tile from the reference system: one sparse direct solve for the M unit inputs."""
    return reference_solve(g, np.eye(g.shape[0]), w)[2]


def path_model(g: torch.Tensor, w: TileWires) -> torch.Tensor:
    """TxSim's approximate analytical model (AAM), first path only: every cell alone in series
    with the resistances of its shortest path, R_driver + (j+1) r_row + (M-i) r_col + R_sense
    (0-based i, j). Ignores that neighbouring cells share the wires: good when the cell
    resistances dwarf the wires (TxSim Fig. 6a), poor otherwise (Fig. 6c)."""
    m, n = g.shape[-2:]
    i = torch.arange(m, dtype=g.dtype, device=g.device).view(m, 1)
    j = torch.arange(n, dtype=g.dtype, device=g.device).view(1, n)
    path = w.r_driver_ohm + (j + 1) * w.r_row_ohm + (m - i) * w.r_col_ohm + w.r_sense_ohm
    return g / (1.0 + g * path)


def fcm_distortion(g: torch.Tensor, g_eff: torch.Tensor) -> torch.Tensor:
    """TxSim's interpolated-FCM distortion D = (G - G_eff) / G per cell; a cell at 0 S has none to
    carry over (0/0 would poison every later step)."""
    return torch.where(g > 0, (g - g_eff) / g.clamp_min(1e-30), 0.0)


def fcm_interpolate(g: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """G_eff ~ G (1 - D) between exact solves (TxSim Sec. IV-D)."""
    return g * (1 - distortion)


class InterpolatedGEff:
    """TxSim's interpolated FCM: solve exactly every ``every`` updates; in between, reuse the
    stored distortion D = (G - G_eff)/G: G_eff ~ G (1 - D)."""

    def __init__(self, w: TileWires, every: int) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.w, self.every = w, every
        self.calls = 0
        self._distortion: torch.Tensor | None = None

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        if self._distortion is None or self.calls % self.every == 0:
            g_eff = effective_conductance(g, self.w)
            self._distortion = fcm_distortion(g, g_eff)
        else:
            g_eff = fcm_interpolate(g, self._distortion)
        self.calls += 1
        return g_eff
