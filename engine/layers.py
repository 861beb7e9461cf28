"""Crossbar twins of ``nn.Linear`` and ``nn.Conv2d`` (convolution as an unfolded matmul).

A convolution with ``groups`` groups maps each group's (C_in/groups * kh * kw) x (C_out/groups)
matrix on its own tiles (im2col ordering of F.unfold: channel, then kernel row, then column).
Its reads run as a tile-masked convolution (:class:`engine.tile_ops.ConvTiles`), or as an
explicit im2col matmul when per-cell draws per read are needed (exact telegraph noise).
Inputs are instance-major: (instances * batch, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .crossbar import CrossbarLayer
from .hardware import HardwareSpec
from .tile_ops import ConvTiles, MatmulTiles


def conv_output_size(h: int, w: int, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """Spatial output size of a convolution (the formula of ``nn.Conv2d``)."""
    ho = (h + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    return ho, wo


class CrossbarLinear(CrossbarLayer):
    @classmethod
    def from_module(cls, mod: nn.Linear, hw: HardwareSpec, name: str, layer_index: int) -> CrossbarLinear:
        return cls(mod.weight, mod.bias, 1, mod.in_features, mod.out_features, hw, name, layer_index)

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.detach().t().unsqueeze(0)

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _as_matrix(self, codes: torch.Tensor, instances: int) -> torch.Tensor:
        return codes.reshape(instances, -1, self.k)

    def tile_operator(self, cell_draws: bool) -> MatmulTiles:
        return MatmulTiles(self.grid, self._as_matrix)

    def native_layout(self, instances: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.empty(instances, self.k, self.n, dtype=like.dtype, device=like.device)  # (I, k, n) for bmm
        return w, w.unsqueeze(1)

    def kernel_layout(self) -> tuple[tuple[int, ...], bool]:
        return (1, self.k, self.n), False

    def folded_forward(self, codes: torch.Tensor, w_native: torch.Tensor) -> torch.Tensor:
        c = self._as_matrix(codes, w_native.shape[0])
        if self.bias is None:
            y = torch.bmm(c, w_native)
        else:
            y = torch.baddbmm(self.bias.view(1, 1, -1), c, w_native)
        return y.reshape(*codes.shape[:-1], self.n)

    def from_matrix(self, y: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return y.reshape(*codes.shape[:-1], self.n)

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias


class CrossbarConv2d(CrossbarLayer):
    def __init__(self, mod: nn.Conv2d, hw: HardwareSpec, name: str, layer_index: int) -> None:
        g = mod.groups
        k = (mod.in_channels // g) * mod.kernel_size[0] * mod.kernel_size[1]
        self._conv_tiles: ConvTiles | None = None  # the tile-masked convolution's index tables
        super().__init__(mod.weight, mod.bias, g, k, mod.out_channels // g, hw, name, layer_index)
        self.in_channels, self.out_channels = mod.in_channels, mod.out_channels
        self.kernel_size, self.stride, self.dilation = mod.kernel_size, mod.stride, mod.dilation
        if isinstance(mod.padding, str):  # 'same' / 'valid' -> explicit amounts
            if any((d * (ks - 1)) % 2 for d, ks in zip(mod.dilation, mod.kernel_size)) and mod.padding == "same":
                raise ValueError(f"layer {name}: padding='same' with an even kernel is not supported")
            pad = (
                (0, 0)
                if mod.padding == "valid"
                else tuple(d * (ks - 1) // 2 for d, ks in zip(mod.dilation, mod.kernel_size))
            )
        else:
            pad = mod.padding
        self.padding = tuple(pad)
        self.padding_mode = mod.padding_mode

    def drop_derived(self) -> None:
        super().drop_derived()
        self._conv_tiles = None

    @classmethod
    def from_module(cls, mod: nn.Conv2d, hw: HardwareSpec, name: str, layer_index: int) -> CrossbarConv2d:
        return cls(mod, hw, name, layer_index)

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.detach().reshape(self.groups, self.n, self.k).transpose(1, 2)

    @property
    def _conv_padding(self) -> tuple[int, ...]:
        """Padding left to the convolution after :meth:`_pad_input`."""
        return self.padding if self.padding_mode == "zeros" else (0, 0)

    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return x
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode)

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
        return F.conv2d(self._pad_input(x), w, bias, self.stride, self._conv_padding, self.dilation, groups)

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        return conv_output_size(h, w, self.kernel_size, self.stride, self.padding, self.dilation)

    def _unfold(self, codes: torch.Tensor, instances: int) -> torch.Tensor:
        """im2col: (I*B, C, H, W) -> (I, B*L, C*kh*kw)."""
        cols = F.unfold(self._pad_input(codes), self.kernel_size, self.dilation, self._conv_padding, self.stride)
        ib, kk, positions = cols.shape
        return cols.transpose(1, 2).reshape(instances, (ib // instances) * positions, kk)

    def tile_operator(self, cell_draws: bool) -> MatmulTiles | ConvTiles:
        if cell_draws:
            return MatmulTiles(self.grid, self._unfold)
        cached = self._conv_tiles  # index tables depend only on the grid: build once
        if cached is None or cached.grid != self.grid or cached.device != self.weight.device:
            cached = self._conv_tiles = ConvTiles(
                self.grid,
                self.in_channels,
                self.kernel_size,
                self.stride,
                self._conv_padding,
                self.dilation,
                self._pad_input,
                self.weight.device,
            )
        return cached

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.weight, self.bias, self.groups)

    def native_layout(self, instances: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I * out_channels, in_channels / groups, kh, kw), instances as conv groups; viewed as (I, G, k, n)."""
        shape = (instances * self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        w = torch.empty(shape, dtype=like.dtype, device=like.device)
        return w, w.view(instances, self.groups, self.n, self.k).transpose(-1, -2)

    def kernel_layout(self) -> tuple[tuple[int, ...], bool]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size), True

    def folded_forward(self, codes: torch.Tensor, w_native: torch.Tensor) -> torch.Tensor:
        w = w_native
        i = w.shape[0] // self.out_channels
        if i == 1:
            return self._conv(codes, w, self.bias, self.groups)
        # instances side by side as conv groups: one native call for all of them
        b = codes.shape[0] // i
        x = codes.reshape(i, b, *codes.shape[1:]).transpose(0, 1).reshape(b, i * self.in_channels, *codes.shape[2:])
        y = self._conv(x, w, None if self.bias is None else self.bias.repeat(i), i * self.groups)
        y = y.reshape(b, i, self.out_channels, *y.shape[2:]).transpose(0, 1)
        return y.reshape(i * b, self.out_channels, *y.shape[3:])

    def from_matrix(self, y: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(I, B*L, out) -> (I*B, out, H_out, W_out)."""
        ho, wo = self._out_size(codes.shape[2], codes.shape[3])
        ib = codes.shape[0]
        return y.reshape(ib, ho * wo, self.out_channels).transpose(1, 2).reshape(ib, self.out_channels, ho, wo)

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
