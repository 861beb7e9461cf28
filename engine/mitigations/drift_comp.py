"""``drift_comp``: drift compensation, aihwkit's ``GlobalDriftCompensation`` (``aihwkit.inference.
compensation.drift``) and a per-column variant.

Right after programming (t0) and again at inference time t, every layer reads a fixed calibration
input, all ones on every row; the ratio of the two readouts is applied to the layer's outputs
digitally:
  ``scope: layer``  (global, as aihwkit): alpha = sum_j |y_j(t0)| / sum_j |y_j(t)|, one scalar per layer;
  ``scope: column``: alpha_j = s_j(t0) / s_j(t) per output, with s_j the column's total conductance
  (each array's bit line read on its own, before the I+ - I- subtraction, slices weighted 2^(b s)):
  a signed readout sum_i W_ij can be near 0 for a column whose weights cancel, and its ratio is then
  meaningless (measured: worse than no compensation), while s_j > 0 always.
y_j = sum_i W_ij with W the weight each instance's cells realise (engine.mapping.decode_levels of the
programmed conductances, drift and stuck cells included, in the logical row order of any remapping).
The readouts are taken with an ideal periphery (no wire resistance, ADC or read noise): a digital
reference of the same instance, not a second noisy measurement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from .base import Mitigation, StageUpdate, TrialContext

if TYPE_CHECKING:
    from ..conversion import CrossbarModel


class DriftCompensation(Mitigation):
    name: ClassVar[str] = "drift_comp"
    scope: Literal["layer", "column"] = "layer"

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> StageUpdate:
        import torch

        from ..instance import program_levels
        from ..mapping import decode_levels, slice_weights
        from ..programming import to_logical

        hw = xmodel.hw
        at_t0 = hw.model_copy(update={"time_s": None})  # the same draws, read right after programming
        update = {}
        for layer in xmodel.crossbar_layers():
            cells = layer.cells
            if cells is None or cells.instance is None or cells.levels is None:
                continue
            grid = layer.grid
            draws = cells.instance.draws(layer.layer_index, grid.cell_shape, cells.h.device)
            h0 = program_levels(cells.levels, draws, at_t0, cells.n_instances)
            ref = layer.mapped.reference

            g_min_n = hw.device.g_min_n
            coef = slice_weights(grid.slices, hw.device.bits_per_cell, cells.h.device).to(cells.h.dtype)

            def readout(h: torch.Tensor) -> torch.Tensor:  # (I, groups * n): all-ones input, I+ - I-
                w = decode_levels(grid.unplace(to_logical(h, cells)), hw, ref)  # (I, G, k, n)
                return w.sum(2).reshape(w.shape[0], -1)

            def total(h: torch.Tensor) -> torch.Tensor:  # (I, groups * n): each bit line on its own
                g = grid.unplace(to_logical(h, cells) + g_min_n)  # (I, A, G, k, n, S)
                return (g.sum((1, 3)) * coef).sum(-1).reshape(g.shape[0], -1)

            if self.scope == "layer":
                y0, yt = readout(h0), readout(cells.h)
                gain = y0.abs().sum(1, keepdim=True) / yt.abs().sum(1, keepdim=True).clamp_min(1e-30)
                gain = gain.expand_as(yt)
            else:
                s0, st = total(h0), total(cells.h)
                gain = s0 / st.clamp_min(1e-30)
            update[layer.name] = {"gain": gain.to(torch.float32).contiguous()}
        return update

    def label(self) -> str:
        return self.name if self.scope == "layer" else f"{self.name}(scope={self.scope})"
