"""Tile operators: how a layer's DAC chunks meet its tiles' conductance matrices.

Every operator computes, for each instance, group, row tile, read and tile column,

    out[i, g, t, m, q] = sum_r v[i, g, t, m, r] * mat[i, g, t, r, q]

where ``mat`` (instances, groups, t_r, rows, Q) is a per-tile matrix (the effective conductance,
or the conductances/telegraph jumps that set noise variances) and m runs over
(input chunk, read). They differ only in how the reads are laid out:

* :class:`MatmulTiles` - reads are rows of a matrix (Linear layers; im2col for convolutions);
* :class:`ConvTiles` - a convolution whose weight holds each row tile's matrix, zero outside the
  tile's rows, so the unfolded input (kernel-size times larger) is never built. A tile's rows are
  a contiguous run of the im2col index (channel, kernel row, kernel column), so it only sees a
  window of about rows / (kh kw) + 1 input channels: when that window is at most half of the
  channels, every tile becomes its own convolution group over its gathered window (multiply-adds
  ~ window/channels x t_r of the layer's); otherwise one convolution reads all channels for all
  tiles (t_r x the layer's), which the native kernel runs faster at small channel counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .periphery import InputCoding
from .tiling import TileGrid


class MatmulTiles:
    """Reads as matrix rows. ``to_matrix`` maps input codes to (I, M, groups * k)."""

    supports_cell_draws = True  # exposes per-row voltages (exact telegraph sampling)

    def __init__(self, grid: TileGrid, to_matrix: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        self.grid = grid
        self.to_matrix = to_matrix

    def voltages(self, codes: torch.Tensor, coding: InputCoding, instances: int) -> tuple[torch.Tensor, int]:
        """DAC chunk voltages (I, G, t_r, P*M, R) and the number of reads per chunk M."""
        mat = self.to_matrix(codes, instances)
        i, m, _ = mat.shape
        v = self.grid.split_inputs(coding.split(mat))  # (P, I, M, G, t_r, R)
        return v.permute(1, 3, 4, 0, 2, 5).reshape(i, self.grid.groups, self.grid.t_r, -1, self.grid.rows), m

    def operand(self, mat: torch.Tensor) -> torch.Tensor:
        return mat.contiguous()

    def apply(self, v: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
        return v @ operand

    apply_native = apply  # (I, G, t_r, P*M, Q) is already the layout reads are contracted in

    @staticmethod
    def contract(out: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """sum over row tiles t and chunks p of coef[p] out[i, g, t, (p, m), ...] -> (I, G, M, ...):
        one batched GEMV that reads ``out`` once."""
        i, g, tr, pm = out.shape[:4]
        if tr * coef.numel() == 1:  # one row tile, one chunk (coefficient 2**0 = 1): nothing to add
            return out.reshape(i, g, pm, *out.shape[4:])
        flat = out.reshape(i * g, tr * coef.numel(), -1)
        y = coef.to(out.dtype).repeat(tr) @ flat
        return y.reshape(i, g, pm // coef.numel(), *out.shape[4:])


class ConvTiles:
    """Reads as a convolution; output channels are (instance, group, row tile, tile column)."""

    supports_cell_draws = False

    def __init__(
        self,
        grid: TileGrid,
        in_channels: int,
        kernel_size: tuple[int, ...],
        stride,
        padding,
        dilation,
        pad_input: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
    ) -> None:
        """Index tables are built on the host once and kept on ``device`` (no copy per read)."""
        self.grid, self.device = grid, device
        self.in_channels, self.kernel_size = in_channels, kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.pad_input = pad_input
        kk = kernel_size[0] * kernel_size[1]
        cg = in_channels // grid.groups
        cpu = torch.device("cpu")
        t = torch.arange(grid.t_r, device=cpu)
        first = (t * grid.rows) // kk
        last = torch.clamp(((t + 1) * grid.rows - 1) // kk, max=cg - 1)
        window = int((last - first).max()) + 1
        self.windowed = grid.t_r > 1 and 2 * window <= cg
        if self.windowed:
            self.window = window
            chan = (first[:, None] + torch.arange(window, device=cpu)[None, :]).clamp(max=cg - 1)  # (t_r, window)
            gather = (torch.arange(grid.groups, device=cpu)[:, None, None] * cg + chan[None]).reshape(-1)
            self._gather: torch.Tensor | None = gather.to(device)
        else:
            self.window = cg
            chan = torch.arange(cg, device=cpu).expand(grid.t_r, cg)
            self._gather = None
        # row of tile t's matrix feeding (t, window slot, kernel position); ``rows`` = a zero row
        kidx = chan[:, :, None] * kk + torch.arange(kk, device=cpu)[None, None, :]  # im2col index
        r = kidx - (t * grid.rows)[:, None, None]
        ok = (r >= 0) & (r < grid.rows) & (kidx < grid.k)
        if self.windowed:  # clamped duplicate slots past the tile's last channel stay zero
            ok &= (first[:, None] + torch.arange(window, device=cpu)[None, :] <= last[:, None])[:, :, None]
        self._row = torch.where(ok, r, torch.full_like(r, grid.rows)).to(device)  # (t_r, window, kk)
        self._tiles = torch.arange(grid.t_r, device=device)[:, None, None]

    def voltages(self, codes: torch.Tensor, coding: InputCoding, instances: int) -> tuple[torch.Tensor, int]:
        """Chunks arranged as (P * B, I * channels, H, W), instances side by side as channel groups."""
        x = self.pad_input(codes)
        if self._gather is not None:
            x = x.index_select(1, self._gather)  # (I*B, G*t_r*window, H, W)
        # channels last before the planes-times larger split (elementwise ops keep their input's
        # memory order): oneDNN's grouped convs run faster in NHWC
        chunks = coding.split(x.permute(0, 2, 3, 1).contiguous())  # (P, I*B, H, W, C)
        p, ib, h, w, c = chunks.shape
        b = ib // instances
        v = chunks.reshape(p, instances, b, h, w, c).permute(0, 2, 3, 4, 1, 5).reshape(p * b, h, w, instances * c)
        return v.permute(0, 3, 1, 2), -1  # (P*B, I*C, H, W) in NHWC strides

    def operand(self, mat: torch.Tensor) -> torch.Tensor:
        """(I, G, t_r, R, Q) -> conv weight (I*G*t_r*Q, window, kh, kw)."""
        i, g, tr, r, q = mat.shape
        padded = torch.cat([mat, mat.new_zeros(i, g, tr, 1, q)], dim=3)  # row R is zero
        w = padded[:, :, self._tiles, self._row]  # (I,G,t_r,window,kk,Q)
        w = w.permute(0, 1, 2, 5, 3, 4).reshape(i * g * tr * q, self.window, *self.kernel_size)
        return w.contiguous(memory_format=torch.channels_last)

    def apply_native(self, v: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
        """The convolution's own layout, (P*B, L, I, G, t_r, Q) - a view of its NHWC result."""
        g = self.grid
        n_groups = v.shape[1] // self.window  # I*G*t_r (windowed) or I*G
        out = F.conv2d(v, operand, None, self.stride, self.padding, self.dilation, n_groups)
        inst = n_groups // (g.groups * (g.t_r if self.windowed else 1))
        pb, c, h, w = out.shape
        return out.permute(0, 2, 3, 1).reshape(pb, h * w, inst, g.groups, g.t_r, c // (inst * g.groups * g.t_r))

    def apply(self, v: torch.Tensor, operand: torch.Tensor) -> torch.Tensor:
        """(I, G, t_r, P*M, Q), one copy of the native result."""
        out = self.apply_native(v, operand)
        pb, positions, inst = out.shape[:3]
        return out.permute(2, 3, 4, 0, 1, 5).reshape(inst, self.grid.groups, self.grid.t_r, pb * positions, -1)

    def contract(self, out: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """sum over chunks p and row tiles t of coef[p] out[(p, b), l, i, g, t, q] -> (I, G, B*L, Q),
        reading the native layout once (chunks are its outermost axis)."""
        pb, positions, inst, groups, tr, q = out.shape
        p = coef.numel()
        y = (coef.to(out.dtype) @ out.reshape(p, -1)).reshape(pb // p * positions, inst, groups, tr, q).sum(3)
        return y.permute(1, 2, 0, 3)
