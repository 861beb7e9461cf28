"""Training on a non-ideal crossbar (TxSim Sec. IV): forward, backward and update in hardware.

Every Linear/Conv2d (convolutions as im2col) becomes an :class:`AnalogLayer` whose weights live
as analog conductance pairs, one cell per weight in each array of a differential pair:
G+ - G- = w S / W_max, S = G_max - G_min, W_max = ``weight_range`` x max|w| at initialisation
(TxSim's per-layer gradient-to-dG scaling, Scale_k = S / W_max; TxSim also names the gradient
statistic dW_max without a formula - it plays no part here). ``pair: direct`` starts each
weight on the array of its sign with the other device at G_min (TxSim's separate positive and
negative crossbars); ``balanced`` starts both devices around the mid conductance.

* Forward: inputs quantised by the DAC (PytorX Alg. 1: dx = max|x| / 2^(N-1) per training batch,
  the mean over the last epoch's batches at test time), then the inference read itself
  (:meth:`engine.crossbar.CrossbarLayer.read` of a twin programmed with the pair as stored): the
  instance's static effects (variation as TxSim's non-ideal conductance generator, stuck cells), G_eff
  (IR drop: the exact network, re-solved every ``refresh_every`` updates with the distortion reused in
  between - TxSim's interpolated FCM), DAC chunks (``dac_bits``) and DAC loading, the per-read effects
  (thermal/shot, RTN, read fluctuation, column AWGN) from a stream that continues across updates,
  sensing (analog I+ - I-, or each array digitised with ``adc.subtract: digital``), the column ADC
  with the range of each training batch (PytorX Alg. 1; ``adc.full_scale_a``: a given range), and the
  digital shift-and-add of chunks and row tiles. One copy of the read, not a training variant of it.
* Backward: the activation gradient is read through the same tiles transposed, by the same read
  (a twin whose tiles are the forward's transposed) - errors driven onto the columns through the DAC
  (chunks, loading of the column drivers), currents sensed on the rows with the per-read effects of
  those bit lines, digitised with their own Alg. 1 ranges. By reciprocity of the linear resistive
  network the transposed read of the wires is exactly G_eff^T (the forward's G_eff, static effects
  included), so it is not solved again.
* Update: dW = -lr x^T delta from the quantised inputs and errors (optionally averaged with
  momentum in a digital accumulator), dG_ideal = dW S / W_max, split
  +dG/2 on G+ and -dG/2 on G- (a device's share that would cross its bound goes to its partner),
  each through TxSim eq. 1 with write noise
  (:class:`engine.training.update.UpdateModel`; per example's rank-1 write by default, so the noise
  variance is the sum over the batch's writes, (x^2)^T delta^2); stuck cells stay stuck.
Biases stay digital (plain SGD).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .. import seeding
from ..hardware import HardwareSpec, check_write_granularity
from ..instance import HardwareInstance, LayerCells
from ..layers import CrossbarLinear, conv_output_size
from ..nonideal import READ_EFFECTS
from ..nonideal.faults import STUCK_GMAX, STUCK_GMIN
from ..periphery import ADC, InputCoding, RangeTracker
from .update import UpdateModel


def _quantise(t: torch.Tensor, tracker: RangeTracker, training: bool) -> tuple[torch.Tensor, float]:
    """PytorX Alg. 1: each training batch quantised with its own range, evaluation with the mean."""
    step = tracker.batch_step(t) if training else tracker.fitted_step()
    return tracker.coding().quantise(t, step), step


def check_trainable(hw: HardwareSpec) -> None:
    """Crossbar training stores each weight as one analog conductance pair (TxSim Sec. IV): one slice,
    two arrays, linear cells. Validation refuses the other settings for ``kind: train``; this guards
    direct use of :func:`to_analog`."""
    if hw.slices != 1 or hw.mapping.realisation != "differential":
        raise ValueError(
            "crossbar training holds each weight as one differential conductance pair: hardware.device."
            "bits_per_cell must cover mapping.weight_bits - 1 (one slice) with mapping.realisation: differential"
        )
    if hw.iv.model != "linear" or hw.drift.model != "none":
        raise ValueError("crossbar training models linear cells at programming time: hardware.iv and drift are off")


class AnalogLayer(nn.Module):
    g: torch.Tensor  # (2, k, n) siemens, a registered buffer
    conv: dict | None

    def __init__(
        self, module: nn.Module, hw: HardwareSpec, layer_index: int, seed: int, w_max: float | None = None
    ) -> None:
        super().__init__()
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"crossbar training converts Linear and Conv2d layers (got {type(module).__name__})")
        check_trainable(hw)
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
        self.hw, self.layer_index, self.seed = hw, layer_index, seed
        # the inference read's layer, programmed with this pair's cells (its float weight is never read)
        self.xbar = CrossbarLinear(
            torch.empty(0, device=w.device), None, 1, k, n, hw, f"analog{layer_index}", layer_index
        )
        self.xbar.weight.requires_grad_(False)
        self.xbar.allow_fold = False  # read by the tiled read (read() below), never folded
        self.grid = self.xbar.grid
        # the backward's read of the same tiles transposed: errors drive the columns, the rows are sensed;
        # programmed with the forward's G_eff transposed (reciprocity), so its wires are not solved again.
        # Columns without weights are driven at 0 V: they change a transposed read only through the thermal
        # noise of their cells on each row's bit line, so they are kept (whole physical tiles) only when a
        # bit-line read effect is in use and left out of the contraction otherwise (up to 10x less work
        # for a narrow layer).
        bit_line_noise = any(e.stage == "bit_line" and e.used(hw) for e in READ_EFFECTS)
        self._rows_t = hw.crossbar.cols if bit_line_noise else self.grid.wcols
        hw_t = hw.model_copy(
            update={
                "crossbar": hw.crossbar.model_copy(update={"rows": self._rows_t, "cols": hw.crossbar.rows}),
                "ir_drop": hw.ir_drop.model_copy(update={"enabled": False}),
            }
        )
        self.xbar_t = CrossbarLinear(
            torch.empty(0, device=w.device), None, 1, n, k, hw_t, f"analog{layer_index}T", layer_index
        )
        self.xbar_t.weight.requires_grad_(False)
        self.xbar_t.allow_fold = False
        if hw.adc.kind == "quantized":  # PytorX Alg. 1: each training batch's own range (or the given one)
            self.xbar.fit_adc = self._fit_adc
            self.xbar_t.fit_adc = functools.partial(self._fit_adc, backward=True)
        t = self.xbar_t.grid
        assert (t.t_r, t.t_c, t.wcols) == (self.grid.t_c, self.grid.t_r, min(hw.crossbar.rows, k)), "transposed tiles"
        self.instance = HardwareInstance([seed], hw)  # this trial's chip: the inference instance's static draws
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
        self._stuck: tuple[str, tuple[torch.Tensor, torch.Tensor] | None] | None = None  # (device, masks)
        self._apply_stuck()
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
        self._programmed: tuple[int, bool] | None = None  # (updates, input signed) the twin was programmed for
        self._programmed_t: tuple[int, bool] | None = None  # the same for the transposed twin
        self._read_streams: list[torch.Generator] | None = None  # per-read noise: one stream over all updates

    def _apply(self, fn, recurse: bool = True):
        """Moving the layer re-programs its twin on the new device (derived state only)."""
        out = super()._apply(fn, recurse)
        self._programmed, self._programmed_t, self._read_streams, self._stuck = None, None, None, None
        return out

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """Loaded conductances are read through freshly programmed twins."""
        super()._load_from_state_dict(*args, **kwargs)
        self._programmed, self._programmed_t = None, None

    # cells -------------------------------------------------------------------------------------------
    def _stuck_masks(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(at G_max, at G_min) per weight and device, (2, k, n): the instance's fault map, the same
        physical cells as an inference instance of this layer (engine.instance)."""
        dev = self.g.device
        if self._stuck is None or self._stuck[0] != str(dev):
            masks = None
            if self.hw.faults.enabled:
                codes = self.instance.draws(self.layer_index, self.grid.cell_shape, dev).faults
                assert codes is not None
                per_weight = self.grid.unplace(codes[0])[:, 0, :, :, 0]
                masks = per_weight == STUCK_GMAX, per_weight == STUCK_GMIN
            self._stuck = (str(dev), masks)
        return self._stuck[1]

    def _apply_stuck(self) -> None:
        masks = self._stuck_masks()
        if masks is not None:
            hi, lo = masks
            self.g.masked_fill_(hi, self.hw.device.g_max_s).masked_fill_(lo, self.hw.device.g_min_s)

    def programmed(self) -> CrossbarLinear:
        """The read twin programmed with the pair as stored now: static effects of the instance on the
        cells (engine.instance.program_levels), G_eff (exact IR drop every ``refresh_every`` updates,
        TxSim's interpolated FCM in between), read operands. Once per update."""
        signed = self.ranges["x"].signed
        if self._programmed != (self.updates, signed):
            dev, grid = self.hw.device, self.grid
            h = ((self.g - dev.g_min_s) / dev.delta_g_s).float()  # dG above G_min
            levels = grid.place(h.unsqueeze(1).unsqueeze(-1))  # (2, 1, t_r, t_c, R, C), unused cells at G_min
            if self._read_streams is None and self.hw.any_read_noise:
                self._read_streams = [
                    seeding.torch_generator(self.seed, self.layer_index, seeding.READ_NOISE, h.device)
                ]
            self.xbar.set_signs(x_signed=signed)
            self.xbar.program_cells(
                self.instance.cells(levels, self.layer_index, remember=False),
                reuse_ir_distortion=self.updates % self.hw.update.refresh_every != 0,
                read_streams=self._read_streams,
            )
            self._programmed = (self.updates, signed)
        return self.xbar

    def programmed_transposed(self) -> CrossbarLinear:
        """The backward twin programmed with the forward's cells as read (G_eff, static effects in it)
        transposed tile by tile: a physical R x C tile read from its columns is a C x R array whose
        bit lines are the forward's rows. Its per-read effects (bit-line noise on those rows, DAC
        loading of the column drivers) act on the backward reads, from the same per-read stream."""
        signed = self.ranges["e"].signed
        fwd = self.programmed()
        if self._programmed_t != (self.updates, signed):
            h_eff = fwd.effective_cells
            assert h_eff is not None
            h_t = h_eff[..., : self._rows_t].transpose(3, 4).transpose(5, 6).contiguous()  # (1, A, 1, t_c, t_r, C', R)
            self.xbar_t.set_signs(x_signed=signed)
            self.xbar_t.program_cells(LayerCells(h=h_t, seeds=(self.seed,)), read_streams=self._read_streams)
            self._programmed_t = (self.updates, signed)
        return self.xbar_t

    def _fit_adc(self, sensed: torch.Tensor, backward: bool = False) -> ADC:
        """The column ADC of a read (PytorX Alg. 1): the range of this training batch's values (the
        mean of the last epoch's at evaluation), or for forward reads a given ``adc.full_scale_a``
        (the backward's errors span other magnitudes: their row ADC keeps Alg. 1's range)."""
        a, tracker = self.hw.adc, self.ranges["ex" if backward else "y"]
        step = tracker.batch_step(sensed) if self.training else tracker.fitted_step()
        if a.full_scale_a is not None and not backward:  # the layer's given-range ADC, with this run's sign
            self.xbar.set_signs(adc_signed=tracker.signed)
            adc = self.xbar.adc
            assert adc is not None
            return adc
        code = InputCoding(a.bits, a.bits, tracker.signed)
        return ADC(torch.full((1,), step, dtype=torch.float32, device=sensed.device), code.lo, code.hi)

    def read_pair(self) -> torch.Tensor:
        """(G+_eff, G-_eff) of every weight as the reads see them, (2, k, n) siemens."""
        dev = self.hw.device
        h_eff = self.programmed().effective_cells
        assert h_eff is not None
        return (self.grid.unplace(h_eff[0].double())[:, 0, :, :, 0] + dev.g_min_n) * dev.delta_g_s

    def weight(self) -> torch.Tensor:
        """The weight the conductances represent, (k, n)."""
        return ((self.g[0] - self.g[1]) / self.scale).float()

    # reads -------------------------------------------------------------------------------------------
    def read(self, codes: torch.Tensor) -> torch.Tensor:
        """Forward read of input codes (M, k) -> (M, n), units code x S: the inference read
        (CrossbarLayer.read) with the column ADC fitted per training batch."""
        return self.programmed().read(codes)[0] * self.hw.device.delta_g_s

    def read_transposed(self, codes: torch.Tensor) -> torch.Tensor:
        """Backward read of error codes (M, n) -> (M, k), units code x S: the same read on the tiles
        transposed (errors on the columns, row currents digitised per tile with their own Alg. 1 range
        and added digitally). By reciprocity of the linear resistive network it is exactly G_eff^T."""
        return self.programmed_transposed().read(codes)[0] * self.hw.device.delta_g_s

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
        self.updates += 1  # the next read programs the twin with the new conductances

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
        y = layer.read(codes) * (dx / layer.scale)
        ctx.layer, ctx.dx = layer, dx
        ctx.save_for_backward(codes)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        layer = ctx.layer
        (codes,) = ctx.saved_tensors
        ecodes, de = _quantise(grad_y, layer.ranges["e"], True)
        grad_x = layer.read_transposed(ecodes) * (de / layer.scale)
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


__all__ = ["AnalogLayer", "analog_layers", "check_trainable", "to_analog"]
