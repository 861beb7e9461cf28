"""Training on a non-ideal crossbar (TxSim Sec. IV): forward, backward and update in hardware.

Every Linear/Conv2d (convolutions as im2col) becomes an :class:`AnalogLayer` whose weights live
as analog conductance pairs, one cell per weight in each array of a differential pair:
G+ - G- = w S / W_max, S = G_max - G_min, W_max = ``weight_range`` x max|w| at initialisation
(TxSim's per-layer gradient-to-dG scaling, Scale_k = S / W_max; TxSim also names the gradient
statistic dW_max without a formula - it plays no part here). ``pair: direct`` starts each
weight on the array of its sign with the other device at G_min (TxSim's separate positive and
negative crossbars); ``balanced`` starts both devices around the mid conductance.

* Forward: inputs quantised by the DAC (PytorX Alg. 1: dx = max|x| / 2^(N-1) per training batch,
  the mean over the last epoch's batches at test time), every tile read as v @ G_eff (IR drop:
  the exact network, re-solved every ``refresh_every`` updates with the distortion reused in
  between - TxSim's interpolated FCM), the per-read effects in use added through the inference
  read's objects (``engine.nonideal.READ_EFFECTS``: thermal/shot, RTN, read fluctuation on both
  arrays' bit lines, then column AWGN), I+ - I- digitised per tile column (ADC range as Alg. 1),
  partial sums added digitally.
* Backward: the activation gradient is read through the same tiles transposed - errors driven
  onto the columns, currents sensed on the rows, with their own DAC and ADC ranges. By
  reciprocity of the linear resistive network the transposed read is exactly G_eff^T.
* Update: dW = -lr x^T delta from the quantised inputs and errors (optionally averaged with
  momentum in a digital accumulator), dG_ideal = dW S / W_max, split
  +dG/2 on G+ and -dG/2 on G- (a device's share that would cross its bound goes to its partner),
  each through TxSim eq. 1 with write noise
  (:class:`engine.training.update.UpdateModel`; per example's rank-1 write by default, so the noise
  variance is the sum over the batch's writes, (x^2)^T delta^2); stuck cells stay stuck.
Biases stay digital (plain SGD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import seeding
from ..hardware import HardwareSpec, check_write_granularity
from ..instance import draw_layers
from ..irdrop import TileWires, effective_conductance, fcm_distortion, fcm_interpolate, path_model
from ..layers import conv_output_size
from ..nonideal import READ_EFFECTS, ProgramContext, ReadContext
from ..nonideal.faults import STUCK_GMAX, STUCK_GMIN
from ..nonideal.variation import apply_variation
from ..periphery import RangeTracker
from ..tile_ops import MatmulTiles
from ..tiling import TileGrid
from .update import UpdateModel


def _no_matrix(codes: torch.Tensor, instances: int) -> torch.Tensor:
    raise AssertionError("training builds its read voltages itself")


def _no_targets() -> torch.Tensor:
    raise ValueError("1/f read noise (hardware.drift) is not modelled in crossbar training")


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _quantise(t: torch.Tensor, tracker: RangeTracker, training: bool) -> tuple[torch.Tensor, float]:
    """PytorX Alg. 1: each training batch quantised with its own range, evaluation with the mean."""
    step = tracker.batch_step(t) if training else tracker.fitted_step()
    return tracker.coding().quantise(t, step), step


class AnalogLayer(nn.Module):
    g: torch.Tensor  # (2, k, n) siemens, a registered buffer
    conv: dict | None

    def __init__(
        self, module: nn.Module, hw: HardwareSpec, layer_index: int, seed: int, w_max: float | None = None
    ) -> None:
        super().__init__()
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"crossbar training converts Linear and Conv2d layers (got {type(module).__name__})")
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ValueError("crossbar training supports ungrouped, zero-padded convolutions")
            self.conv: dict | None = dict(
                kernel_size=module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride
            )
            self.out_channels = module.out_channels
            w = module.weight.detach().reshape(module.out_channels, -1).t()
        else:
            self.conv = None
            w = module.weight.detach().t()
        k, n = w.shape
        self.hw, self.layer_index = hw, layer_index
        self.grid = TileGrid(
            groups=1,
            k=k,
            n=n,
            rows=hw.crossbar.rows,
            cols=hw.crossbar.cols,
            slices=1,
            arrays=2,
            wcols=min(hw.crossbar.cols, n),
            offset=False,
        )
        dev, up = hw.device, hw.update
        self.update_model = UpdateModel(up.nonlinearity, up.write_noise, dev.g_min_s, dev.g_max_s, up.write_noise_units)
        self.w_max = up.weight_range * (float(w.abs().max()) if w_max is None else w_max)
        self.scale = self.update_model.span / self.w_max  # siemens per unit weight
        if up.pair == "balanced":
            g_ref = 0.5 * (dev.g_min_s + dev.g_max_s)
            g = torch.stack([g_ref + 0.5 * self.scale * w, g_ref - 0.5 * self.scale * w]).double()
        else:  # each sign on its own array, the other device at G_min
            g = torch.stack(
                [dev.g_min_s + self.scale * w.clamp(min=0), dev.g_min_s + self.scale * (-w).clamp(min=0)]
            ).double()
        self.register_buffer("g", g.clamp(dev.g_min_s, dev.g_max_s))  # (2, k, n) siemens
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().clone())
        self.delta = nn.Parameter(torch.zeros(k, n, device=w.device))  # receives dL/dW from the crossbar backward
        self._stuck, self._z = self._sample_cells(seed, w.device)
        self._apply_stuck()
        # per-read effects (engine.nonideal.READ_EFFECTS: the inference read's objects) on the forward reads
        self.read_effects = [e for e in READ_EFFECTS if e.used(hw)]
        self.read_gen = (
            seeding.torch_generator(seed, layer_index, seeding.READ_NOISE, w.device) if self.read_effects else None
        )
        self._read_ops: list | None = None
        self.write_gen = torch.Generator(device=w.device)
        self.write_gen.manual_seed(
            int(seeding.stream(seed, layer_index, seeding.WRITE_NOISE).generate_state(1)[0]) & (2**63 - 1)
        )
        self.ranges = {
            name: RangeTracker(bits)
            for name, bits in (
                ("x", hw.input.input_bits),
                ("y", hw.adc.bits),
                ("e", hw.input.input_bits),
                ("ex", hw.adc.bits),
            )
        }
        self.updates = 0
        self.write_granularity = hw.update.write_granularity
        self.write_sq: torch.Tensor | None = None
        self._momentum: torch.Tensor | None = None
        self._geff: torch.Tensor | None = None
        self._pair: torch.Tensor | None = None  # (2, k, n) siemens as the forward reads them (G_eff with wires)
        self._distortion: torch.Tensor | None = None

    # cells -------------------------------------------------------------------------------------------
    def _sample_cells(
        self, seed: int, device
    ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Stuck cells and variation normals, (2, k, n) each: the same physical draws as inference
        instances of this layer (engine.instance), so an instance's stuck cells are the same cells."""
        hw = self.hw
        if not (hw.faults.enabled or hw.variation.enabled):
            return None, (None, None)
        d = draw_layers([seed], [(self.layer_index, self.grid.cell_shape)], hw, device)[0]
        per_weight = lambda t: None if t is None else self.grid.unplace(t[0])[:, 0, :, :, 0]  # noqa: E731
        stuck = None
        if d.faults is not None:
            codes = per_weight(d.faults)
            assert codes is not None
            stuck = codes == STUCK_GMAX, codes == STUCK_GMIN
        return stuck, (per_weight(d.get("z_abs")), per_weight(d.get("z_rel")))

    def _apply_stuck(self) -> None:
        if self._stuck is not None:
            hi, lo = self._stuck
            self.g.masked_fill_(hi, self.hw.device.g_max_s).masked_fill_(lo, self.hw.device.g_min_s)

    def read_conductance(self) -> torch.Tensor:
        """The pair as the forward reads it, (2, k, n) siemens: TxSim's non-ideal conductance generator
        applies process variation (engine.nonideal.variation, this instance's static draws) to the
        stored conductances; stuck cells read their stuck value."""
        if not self.hw.variation.enabled:
            return self.g
        dg = self.hw.device.delta_g_s
        g = (
            apply_variation(self.g / dg, *self._z, self.hw.variation, dg, self.hw.device.g_max_s / dg, inplace=True)
            * dg
        )
        if self._stuck is not None:
            hi, lo = self._stuck
            g.masked_fill_(hi, self.hw.device.g_max_s).masked_fill_(lo, self.hw.device.g_min_s)
        return g

    def weight(self) -> torch.Tensor:
        """The weight the conductances represent, (k, n)."""
        return ((self.g[0] - self.g[1]) / self.scale).float()

    def effective_difference(self) -> torch.Tensor:
        """G+_eff - G-_eff of every weight (siemens), padded to whole tiles: (t_r R, t_c wcols).

        Without wire resistance the pair is read as stored. With IR drop, the whole physical tiles
        (unused cells at G_min) go through the exact network (re-solved every ``refresh_every``
        updates, the distortion reused in between - TxSim's interpolated FCM)."""
        if self._geff is not None:
            return self._geff
        grid, dev, ir = self.grid, self.hw.device, self.hw.ir_drop
        pad = (0, grid.t_c * grid.wcols - grid.n, 0, grid.t_r * grid.rows - grid.k)
        g = self.read_conductance()
        if not ir.enabled:
            self._pair = g
            self._geff = F.pad((g[0] - g[1]).float(), pad)
            return self._geff
        cells = grid.place(g.unsqueeze(1).unsqueeze(-1) - dev.g_min_s, None)[:, 0] + dev.g_min_s
        if self._distortion is not None and self.updates % self.hw.update.refresh_every != 0:
            geff = fcm_interpolate(cells, self._distortion)
        else:
            wires = TileWires(ir.r_row_ohm, ir.r_col_ohm, ir.r_sense_ohm, ir.r_driver_ohm)
            dtype = torch.float32 if ir.solver_dtype == "float32" else torch.float64
            geff = effective_conductance(cells, wires, dtype=dtype) if ir.model == "exact" else path_model(cells, wires)
            self._distortion = fcm_distortion(cells, geff)
        per_weight = grid.unplace(geff.unsqueeze(1))[:, 0, :, :, 0]  # (2, k, n)
        self._pair = per_weight
        self._geff = F.pad((per_weight[0] - per_weight[1]).float(), pad)
        return self._geff

    def _noise_operands(self) -> list:
        """The bit-line read effects' operands for the pair as read (rebuilt after every update): the
        physical conductances of both arrays in the inference layout (1, 1, t_r, R, 2 t_c wcols), dG
        units, padded cells at G_min."""
        if self._read_ops is None:
            grid, dev = self.grid, self.hw.device
            self.effective_difference()
            pad = (0, grid.t_c * grid.wcols - grid.n, 0, grid.t_r * grid.rows - grid.k)
            assert self._pair is not None  # set with _geff
            pair = F.pad(self._pair.float() / dev.delta_g_s, pad, value=dev.g_min_s / dev.delta_g_s)
            g_phys = pair.reshape(2, grid.t_r, grid.rows, grid.t_c, grid.wcols).permute(1, 2, 0, 3, 4)
            g_phys = g_phys.reshape(1, 1, grid.t_r, grid.rows, -1)
            ctx = ProgramContext(g_phys, MatmulTiles(grid, _no_matrix), _no_targets, self.hw)
            self._read_ops = [(e, e.operands(ctx)) for e in self.read_effects if e.stage == "bit_line"]
        return self._read_ops

    def _read_noise(self, v: torch.Tensor) -> torch.Tensor:
        """Per-read effects' currents on every tile column, (M, t_r, t_c wcols) siemens x code, for the
        row codes ``v`` (M, t_r, R): bit-line currents on both arrays, sensed I+ - I-, then the column
        effects - the same effect objects and draws as an inference read of these conductances."""
        grid, hw = self.grid, self.hw
        gen = self.read_gen
        assert gen is not None

        def randn(shape, like):
            return torch.randn(shape[1:], generator=gen, device=like.device, dtype=like.dtype).unsqueeze(0)

        def rand(shape, like):
            return torch.rand(shape[1:], generator=gen, device=like.device, dtype=like.dtype).unsqueeze(0)

        coding = self.ranges["x"].coding()
        ctx = ReadContext(MatmulTiles(grid, _no_matrix), randn, rand, hw.input.v_read_v / coding.max_chunk, hw)
        v5 = v.transpose(0, 1).unsqueeze(0).unsqueeze(0)  # (1, 1, t_r, M, R)
        noise = torch.zeros((), device=v.device, dtype=v.dtype)
        for effect, ops in self._noise_operands():
            noise = effect.add_noise(noise, v5, ops, ctx)
        noise = noise.expand(1, 1, grid.t_r, v.shape[0], 2 * grid.t_c * grid.wcols)
        cols = noise.reshape(grid.t_r, v.shape[0], 2, grid.t_c * grid.wcols)
        sensed = cols[:, :, 0] - cols[:, :, 1]  # analog subtraction of the pair
        for effect in self.read_effects:
            if effect.stage == "column":
                sensed = effect.add_noise(sensed.unsqueeze(0), v5, {}, ctx)[0]
        return sensed.transpose(0, 1) * hw.device.delta_g_s

    # reads -------------------------------------------------------------------------------------------
    def read(self, codes: torch.Tensor, transpose: bool, adc: RangeTracker) -> torch.Tensor:
        """Tile reads of input codes, (M, k) -> (M, n); transposed: (M, n) -> (M, k). Units: code x S.
        The pair is subtracted in analog; every tile column's (row's, transposed) current is digitised
        and the tiles' partial sums are added digitally."""
        grid, diff = self.grid, self.effective_difference()
        if not transpose:
            v = _pad_to(codes, grid.t_r * grid.rows).reshape(-1, grid.t_r, grid.rows)
            cur = torch.einsum("mtr,trn->mtn", v, diff.view(grid.t_r, grid.rows, -1))  # per row tile
            if self.read_effects:  # per-read noise on the forward reads (the backward's are noise-free)
                cur = cur + self._read_noise(v)
            out = grid.n
        else:
            v = _pad_to(codes, grid.t_c * grid.wcols).reshape(-1, grid.t_c, grid.wcols)
            rows = diff[: grid.k].reshape(grid.k, grid.t_c, grid.wcols)  # only the rows that hold weights
            cur = torch.einsum("mcj,kcj->mck", v, rows)  # per column tile
            out = grid.k
        if self.hw.adc.kind == "quantized":
            cur, step = _quantise(cur, adc, self.training)
            return cur.sum(1)[:, :out] * step  # the digital sum of the tiles' codes, times the ADC step
        return cur.sum(1)[:, :out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            lead = x.shape[:-1]
            y = _AnalogMVM.apply(x.reshape(-1, self.grid.k), self.delta, self)
            y = y.reshape(*lead, self.grid.n)
            return y if self.bias is None else y + self.bias
        b, _, h, w = x.shape
        cols = F.unfold(x, **self.conv)  # (B, K, L)
        positions = cols.shape[-1]
        y = _AnalogMVM.apply(cols.transpose(1, 2).reshape(-1, self.grid.k), self.delta, self)  # (B*L, n)
        ho, wo = conv_output_size(h, w, **self.conv)
        y = y.reshape(b, positions, self.grid.n).transpose(1, 2).reshape(b, self.grid.n, ho, wo)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    # update ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_update(self, lr: float, momentum: float = 0.0) -> None:
        """dG_ideal = -m S / W_max split over the pair, through TxSim eq. 1 and write noise, then times
        the learning rate (TxSim Sec. IV-D: "dG_non-ideal is multiplied by the learning rate"); m is
        dL/dW, or its momentum average (a digital accumulator per weight) when ``momentum`` > 0. The
        split keeps lr x dG_ideal inside each device's bounds."""
        if self.delta.grad is None:
            return
        check_write_granularity(self.hw, momentum)
        step = self.delta.grad.double()
        if momentum > 0:
            self._momentum = step if self._momentum is None else momentum * self._momentum + step
            step = self._momentum
        dg = (-lr * self.scale) * step
        d_plus, d_minus = self._split(dg)
        model = self.update_model
        mag_plus = mag_minus = None
        if self.write_sq is not None:
            rms = self.scale * self.write_sq.double().sqrt()  # sqrt(sum_b dG_b^2) / lr
            total = dg.abs()
            share = lambda d: torch.where(total > 0, d.abs() / total.clamp_min(1e-300), 0.5) * rms  # noqa: E731
            mag_plus, mag_minus = share(d_plus), share(d_minus)
        self.g[0] = model.apply(self.g[0], d_plus / lr, lr, self.write_gen, mag_plus)
        self.g[1] = model.apply(self.g[1], d_minus / lr, lr, self.write_gen, mag_minus)
        self.write_sq = None
        self._apply_stuck()
        self.delta.grad = None
        self.updates += 1
        self._geff, self._read_ops = None, None

    def _split(self, dg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ideal changes of G+ and G- for a weight change dg (siemens): half each, and the part a
        device cannot take at its bound goes to its partner (so a pair whose inactive device sits
        at G_min still realises the whole step)."""
        lo, hi = self.hw.device.g_min_s, self.hw.device.g_max_s

        def fit(g: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            return torch.minimum(torch.maximum(d, lo - g), hi - g)

        d_plus = fit(self.g[0], 0.5 * dg)
        d_minus = fit(self.g[1], -0.5 * dg - (0.5 * dg - d_plus))  # the partner takes G+'s shortfall
        d_plus = fit(self.g[0], dg + d_minus)  # and G+ takes G-'s
        return d_plus, d_minus

    def end_epoch(self) -> None:
        for r in self.ranges.values():
            r.end_epoch()


class _AnalogMVM(torch.autograd.Function):
    """Forward and backward through the crossbar; the weight 'gradient' is the digital outer
    product of the quantised inputs and errors, used by :meth:`AnalogLayer.apply_update`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, delta: torch.Tensor, layer: AnalogLayer) -> torch.Tensor:
        codes, dx = _quantise(x, layer.ranges["x"], layer.training)
        y = layer.read(codes, transpose=False, adc=layer.ranges["y"]) * (dx / layer.scale)
        ctx.layer, ctx.dx = layer, dx
        ctx.save_for_backward(codes)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        layer = ctx.layer
        (codes,) = ctx.saved_tensors
        ecodes, de = _quantise(grad_y, layer.ranges["e"], True)
        grad_x = layer.read(ecodes, transpose=True, adc=layer.ranges["ex"]) * (de / layer.scale)
        grad_w = (codes.t() @ ecodes) * (ctx.dx * de)
        if layer.update_model.write_noise > 0 and layer.write_granularity == "example":
            # sum over rank-1 writes b (one per input row: sample, or sample x position in a conv) of
            # (x_b delta_b)^2: the variance of their independent write noises adds up
            layer.write_sq = (codes.square().t() @ ecodes.square()) * (ctx.dx * de) ** 2
        return grad_x, grad_w, None


def analog_layers(model: nn.Module) -> list[AnalogLayer]:
    return [m for m in model.modules() if isinstance(m, AnalogLayer)]


def to_analog(model: nn.Module, hw: HardwareSpec, seed: int, weight_ranges: list[float] | None = None) -> nn.Module:
    """Replace every Linear/Conv2d in place by an :class:`AnalogLayer` (numbered as in
    engine.conversion, so an instance's stuck cells are the same physical cells). ``weight_ranges``:
    per-layer W_max before the ``weight_range`` factor (default: the layer's initial max|w|)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for index, name in enumerate(names):
        w_max = None if weight_ranges is None else weight_ranges[index]
        model.set_submodule(name, AnalogLayer(model.get_submodule(name), hw, index, seed, w_max))
    return model


__all__ = ["AnalogLayer", "analog_layers", "to_analog"]
