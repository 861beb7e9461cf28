"""Partition of a layer's weight matrix over physical crossbar tiles (PytorX Sec. 3.2).

A layer computes y = x W for every group g of a (possibly grouped) layer, W_g of shape
(k, n). It is cut into ``t_r x t_c`` tiles of ``rows x cols`` physical cells per array.
Inside a tile, weight column j occupies the ``slices`` adjacent physical columns
j*slices .. j*slices + slices - 1 (least significant slice first, Yu eq. 2 layout); the
offset realisation appends one reference column per slice after the data columns. Unused
rows and columns exist physically and hold level 0 (G_min). Partial sums of the ``t_r``
row tiles are added digitally after the ADC.

Tensors of a layer's cells have the canonical shape
``(instances, arrays, groups, t_r, t_c, rows, cols)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .hardware import HardwareSpec

# (I, A, G, t_r, t_c, R, used) cells -> (I, G, t_r, R, A, t_c, used): rows next to the tile, columns last
# (the read's layout; the same permute takes a network solve's (I, A, G, t_r, t_c, P*M, used) currents to
# (I, G, t_r, P*M, A, t_c, used))
READ_LAYOUT = (0, 2, 3, 5, 1, 4, 6)


@dataclass(frozen=True)
class TileGrid:
    groups: int
    k: int  # inputs per group (rows of W_g)
    n: int  # outputs per group (columns of W_g)
    rows: int
    cols: int
    slices: int
    arrays: int
    wcols: int  # weight columns per tile
    offset: bool

    @classmethod
    def for_layer(cls, hw: HardwareSpec, groups: int, k: int, n: int) -> TileGrid:
        return cls(
            groups=groups,
            k=k,
            n=n,
            rows=hw.crossbar.rows,
            cols=hw.crossbar.cols,
            slices=hw.slices,
            arrays=hw.arrays,
            wcols=min(hw.weights_per_tile_col, n),
            offset=hw.mapping.realisation == "offset",
        )

    @property
    def t_r(self) -> int:
        return math.ceil(self.k / self.rows)

    @property
    def t_c(self) -> int:
        return math.ceil(self.n / self.wcols)

    @property
    def data_cols(self) -> int:
        return self.wcols * self.slices

    @property
    def used_cols(self) -> int:
        """Physical columns that are read: data columns plus reference columns."""
        return self.data_cols + (self.slices if self.offset else 0)

    @property
    def cell_shape(self) -> tuple[int, ...]:
        """Shape of one instance's cells: (arrays, groups, t_r, t_c, rows, cols)."""
        return (self.arrays, self.groups, self.t_r, self.t_c, self.rows, self.cols)

    # Weight side -------------------------------------------------------------------------
    def place(self, digits: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Cell levels of one instance from per-weight slice digits.

        digits: (arrays, groups, k, n, slices) integer levels;
        reference: (slices,) levels of the reference column (offset realisation).
        Returns (arrays, groups, t_r, t_c, rows, cols).
        """
        a = digits.shape[0]
        d = F.pad(digits, (0, 0, 0, self.t_c * self.wcols - self.n, 0, self.t_r * self.rows - self.k))
        d = d.reshape(a, self.groups, self.t_r, self.rows, self.t_c, self.wcols, self.slices)
        d = d.permute(0, 1, 2, 4, 3, 5, 6).reshape(a, self.groups, self.t_r, self.t_c, self.rows, self.data_cols)
        if self.offset:
            assert reference is not None
            ref = reference.to(d.dtype).expand(a, self.groups, self.t_r, self.t_c, self.rows, -1)
            d = torch.cat([d, ref], dim=-1)
        return F.pad(d, (0, self.cols - d.shape[-1]))

    def unplace(self, cells: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`place` for the data columns: (..., arrays, groups, k, n, slices)."""
        lead = cells.shape[:-6]
        d = cells[..., : self.data_cols].reshape(
            *lead, self.arrays, self.groups, self.t_r, self.t_c, self.rows, self.wcols, self.slices
        )
        nd = len(lead)
        perm = list(range(nd)) + [nd + i for i in (0, 1, 2, 4, 3, 5, 6)]
        d = d.permute(*perm).reshape(
            *lead, self.arrays, self.groups, self.t_r * self.rows, self.t_c * self.wcols, self.slices
        )
        return d[..., : self.k, : self.n, :]

    # Input side --------------------------------------------------------------------------
    def split_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(..., groups * k) -> (..., groups, t_r, rows), zero inputs on unused rows."""
        lead = x.shape[:-1]
        x = x.reshape(*lead, self.groups, self.k)
        x = F.pad(x, (0, self.t_r * self.rows - self.k))
        return x.reshape(*lead, self.groups, self.t_r, self.rows)


@dataclass(frozen=True)
class KernelFold:
    """A folded read's kernel weight made straight from a layer's programmed cells, where sensing is
    the plain differential one (two arrays, one slice per weight) and no correction, output gain or
    zeroed output enters the weight: what :mod:`engine.fused_draws` may compute in the pass that
    programs the cells. ``native``: the kernel weight's shape for one instance (a linear layer's
    (1, k, n), a convolution's (out, in / groups, kh, kw)); ``n_major``: the kernel holds each W_g
    transposed, (n, k) (a convolution's weight)."""

    grid: TileGrid
    native: tuple[int, ...]
    n_major: bool

    def __post_init__(self) -> None:
        if not self.fits(self.grid):
            raise ValueError(f"a kernel fold needs two arrays and one slice per weight, not {self.grid}")

    @staticmethod
    def fits(grid: TileGrid) -> bool:
        """Whether ``grid``'s sensing is the plain differential one a fold computes."""
        return grid.arrays == 2 and grid.slices == 1 and not grid.offset

    def weight(self, cells: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """One instance's cells (any shape of ``cell_shape``'s size) -> W_eff dx dw in the kernel's
        layout: (I+ - I-) of each weight's column pair (:func:`sense`), cropped to (k, n), times
        ``scale`` (float32) - the two float32 roundings of the layer's own path, a subtraction
        (PytorX eq. 3's differential read) and the product by dx dw, in that order."""
        g = self.grid
        c = cells.reshape(1, *g.cell_shape)[..., : g.wcols]  # (1, A, G, t_r, t_c, R, wcols)
        d = (c[:, 0] - c[:, 1]).permute(0, 1, 2, 4, 3, 5)  # (1, G, t_r, R, t_c, wcols)
        w = d.reshape(1, g.groups, g.t_r * g.rows, g.t_c * g.wcols)[:, :, : g.k, : g.n] * scale
        # row-major like the layer's own kernel weight (a reshape may keep the transpose's strides)
        return (w.transpose(-1, -2) if self.n_major else w).reshape(self.native).contiguous()


def sense(t: torch.Tensor, grid: TileGrid, contiguous: bool = False) -> torch.Tensor:
    """(..., A, t_c, used) physical columns -> (..., t_c, wcols, S) signed column values:
    I+ - I- (differential) or I_data - I_ref (offset). Linear, so it also applies to G.
    ``contiguous``: the result in its own row-major order (else the elementwise kernel's choice,
    which follows the strides of ``t``), so later reshapes of it are views.

    Each operand is one strided view of ``t`` (the chain of slice, reshape and select views it
    replaces cost ~20 us of dispatch per call, more than the subtraction on a small layer)."""
    *lead_st, a_st, tc_st, c_st = t.stride()
    shape = (*t.shape[:-3], grid.t_c, grid.wcols, grid.slices)
    strides = (*lead_st, tc_st, grid.slices * c_st, c_st)  # column j * slices + s of array 0: weight j, slice s
    plus = t.as_strided(shape, strides, t.storage_offset())
    if grid.offset:  # array 0's reference column of slice s (after the data columns), the same for every j
        minus = t.as_strided(shape, (*strides[:-2], 0, c_st), t.storage_offset() + grid.data_cols * c_st)
    else:  # array 1 (the negative weights)
        minus = t.as_strided(shape, strides, t.storage_offset() + a_st)
    if not contiguous:
        return plus - minus
    return torch.sub(plus, minus, out=torch.empty(shape, dtype=t.dtype, device=t.device))
