"""``retrain``: per-instance hardware-aware re-training, RxNN Sec. VI.

On the sampled instance: ``iterations`` steps of Adam on labeled training batches, with the
crossbar model in the forward pass (faults, variation, quantisation, IR drop, ...) and the float
layer's gradient in the backward pass (straight-through); after every step the new weights are
re-mapped and re-programmed on the same physical cells (stuck cells stay stuck). Then evaluate.
The component trains its own copy of the parameters and returns the result (``Weights``); the twin
only maps and programs them (``CrossbarModel.load_weights``).
Batches are drawn with a generator seeded by the instance seed, so a trial is reproducible.
With IR drop, the exact network is solved every ``irdrop_every`` steps and in between the
distortion (G - G_eff)/G of the last solve is reused (TxSim's interpolated FCM); the instance
is solved exactly once more before it is evaluated.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from .base import Mitigation, TrialContext, Weights

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

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> Weights:
        # every trial starts from the trained weights (kept once per twin, whatever the parameters)
        return xmodel.memo(
            HardwareAwareRetraining,
            lambda: Weights({k: v.detach().clone() for k, v in xmodel.state_dict().items()}),
        )

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> Weights:
        """Trains its own copy of the twin's parameters; the twin's layers are only mapped and
        programmed again with them, through ``load_weights``, after every step."""
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call

        if ctx.train_loader is None:
            raise ValueError("retrain needs labeled training data on the worker")
        x_all, y_all = ctx.train_loader
        instance = xmodel.instance  # the same chip after every update
        if instance is None:
            raise RuntimeError("retrain runs after a sampled instance is programmed")
        gen = torch.Generator().manual_seed(ctx.seed)
        params = {n: p.detach().clone().requires_grad_() for n, p in xmodel.named_parameters() if p.requires_grad}
        opt = torch.optim.Adam(list(params.values()), lr=self.lr)
        with xmodel.straight_through():
            for step in range(1, self.iterations + 1):
                idx = torch.randint(len(x_all), (self.batch_size,), generator=gen, device=gen.device).to(x_all.device)
                with torch.enable_grad():
                    logits = functional_call(xmodel, params, (x_all[idx],))
                    loss = F.cross_entropy(logits[0], y_all[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                interpolate = step != self.iterations and step % self.irdrop_every != 0
                xmodel.load_weights({n: p.detach() for n, p in params.items()}, reuse_ir_distortion=interpolate)
        return Weights({n: p.detach() for n, p in params.items()})
