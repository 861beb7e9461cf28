"""``nia``: noise-injection adaption, PytorX Sec. 4.3.

(1) The trained model is mapped on the crossbar with the sweep point's wires (IR drop only: no
random faults, variation or read noise, so the statistics are deterministic); (2) the per-tile
shift of the partial sums (ideal minus non-ideal, :mod:`engine.shift_stats`) gives a Gaussian
per tile, mean mu_t and std s_t; (3) the float model is fine-tuned with that noise added at each
crossbar output: output j of a layer (tile column c) gets N(-sum_r mu_rc, sum_r s_rc^2), the sum
over the row tiles whose partial sums feed it. One variant per (wires, tiling), trained once per
sweep; no per-chip retraining.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ..hashing import digest
from .base import Mitigation

if TYPE_CHECKING:
    import torch
    from torch import nn


def output_noise(xmodel, stats) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (mean, std) of the noise to add to each output channel (non-ideal - ideal)."""
    import torch

    out = {}
    for layer in xmodel.crossbar_layers():
        st = stats[layer.name]
        grid = layer.grid
        tile_col = torch.arange(grid.n, device=st.mean.device) // grid.wcols  # output j of a group -> its tile column
        mean = -st.mean.sum(1)[:, tile_col].reshape(-1)  # (groups * n,)
        std = (st.std**2).sum(1)[:, tile_col].reshape(-1).sqrt()
        out[layer.name] = (mean, std)
    return out


class NoiseInjectionAdaption(Mitigation):
    name: ClassVar[str] = "nia"
    offline: ClassVar[bool] = True
    epochs: int = Field(10, ge=1, le=10_000, description="fine-tuning epochs with injected noise")
    lr: float = Field(1e-3, gt=0, le=1)
    scale: float = Field(1.0, gt=0, le=100, description="multiplies the injected standard deviation")

    def variant_key(self, base_key: str, hw) -> str:
        wires = {"mapping": hw.mapping_key(), "ir_drop": hw.ir_drop.model_dump(), "dac": hw.dac_loading.model_dump()}
        return f"nia-{digest({'base': base_key, 'params': self.model_dump(), 'hw': wires})}"

    def train_variant(self, base: nn.Module, data, hw, recipe, calibration: list) -> nn.Module:
        from ..conversion import convert
        from ..shift_stats import tile_shift_statistics
        from ..train import train_model

        if not hw.ir_drop.enabled:
            raise ValueError("nia needs hardware.ir_drop.enabled: it adapts the model to the IR-drop statistics")
        quiet = hw.model_copy(
            update={
                "faults": type(hw.faults)(),
                "variation": type(hw.variation)(),
                "read_noise": type(hw.read_noise)(),
                "rtn": type(hw.rtn)(),
                "column_awgn": type(hw.column_awgn)(),
            }
        )
        xm = convert(base, quiet)
        xm.calibrate(calibration)
        xm.program([0])
        noise = output_noise(xm, tile_shift_statistics(xm, calibration))
        model = copy.deepcopy(base)
        handles = []
        for name, (mean, std) in noise.items():
            module = model.get_submodule(name)
            handles.append(module.register_forward_hook(_injector(mean, std * self.scale)))
        try:
            cfg = replace(recipe, epochs=self.epochs, lr=self.lr)
            return train_model(model, data, cfg).model
        finally:
            for h in handles:
                h.remove()


def _injector(mean: torch.Tensor, std: torch.Tensor):
    import torch

    def hook(module: nn.Module, _inp, out: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return out
        shape = (1, -1) + (1,) * (out.dim() - 2)
        m, s = mean.to(out.device, out.dtype).view(shape), std.to(out.device, out.dtype).view(shape)
        return out + m + s * torch.randn_like(out)

    return hook
