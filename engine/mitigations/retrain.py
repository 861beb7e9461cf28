"""``retrain``: per-instance hardware-aware re-training, RxNN Sec. VI.

On the sampled instance: ``iterations`` steps of Adam on labeled training batches, with the
crossbar model in the forward pass (faults, variation, quantisation, IR drop, ...) and the float
layer's gradient in the backward pass (straight-through); after every step the new weights are
re-mapped and re-programmed on the same physical cells (stuck cells stay stuck). Then evaluate.
Batches are drawn with a generator seeded by the instance seed, so a trial is reproducible.
With IR drop, the exact network is solved every ``irdrop_every`` steps and in between the
distortion (G - G_eff)/G of the last solve is reused (TxSim's interpolated FCM); the instance
is solved exactly once more before it is evaluated.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from .base import Mitigation, TrialContext

if TYPE_CHECKING:
    from torch import nn

    from ..conversion import CrossbarModel


class HardwareAwareRetraining(Mitigation):
    name: ClassVar[str] = "retrain"
    iterations: int = Field(150, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=1 << 16)
    irdrop_every: int = Field(10, ge=1, le=1_000_000, description="exact IR-drop solve every L steps")

    def variant_key(self, base_key: str, hw) -> str:
        return "retrain-copy"  # its own twin: re-training changes the weights

    def derive(self, base: nn.Module, ctx: TrialContext) -> nn.Module:
        return copy.deepcopy(base)

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> None:
        # every trial starts from the trained weights (kept once per twin, whatever the parameters)
        initial = xmodel.memo(HardwareAwareRetraining, lambda: copy.deepcopy(xmodel.net.state_dict()))
        xmodel.net.load_state_dict(initial)
        for layer in xmodel.crossbar_layers():
            layer.remap()

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> None:
        import torch
        import torch.nn.functional as F

        if ctx.train_loader is None:
            raise ValueError("retrain needs labeled training data on the worker")
        x_all, y_all = ctx.train_loader
        cells = xmodel.crossbar_layers()[0].cells
        if cells is None:
            raise RuntimeError("retrain runs after the instance is programmed")
        instance = cells.instance  # the same chip after every update
        gen = torch.Generator().manual_seed(ctx.seed)
        layers = xmodel.crossbar_layers()
        params = [p for p in xmodel.net.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr)
        with xmodel.straight_through():
            for step in range(1, self.iterations + 1):
                idx = torch.randint(len(x_all), (self.batch_size,), generator=gen, device=gen.device).to(x_all.device)
                with torch.enable_grad():
                    loss = F.cross_entropy(xmodel(x_all[idx])[0], y_all[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                for layer in layers:
                    layer.remap()  # the twin's own weights changed: quantise and map them again
                interpolate = step != self.iterations and step % self.irdrop_every != 0
                xmodel.program(instance, reuse_ir_distortion=interpolate)
