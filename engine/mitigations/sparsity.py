"""``si``: sparsity induction and zero-node removal, Yu Sec. III-C and eq. 11.

A model variant is trained with an L1 penalty on the Linear/Conv2d weights (once per sweep,
cached by content hash). At inference, every output whose quantised weights are all zero is
forced to 0 instead of reading its (noisy) columns: y_i = 0 if sum_j |w_ji| = 0 (eq. 11).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ..hashing import digest
from .base import Mitigation, StageUpdate, TrialContext

if TYPE_CHECKING:
    from torch import nn

    from ..conversion import CrossbarModel


class SparsityInduction(Mitigation):
    name: ClassVar[str] = "si"
    offline: ClassVar[bool] = True
    l1: float = Field(1e-4, gt=0, le=1.0, description="L1 coefficient on the weights")
    epochs: int | None = Field(None, ge=1, description="default: the base recipe's epochs")

    def variant_key(self, base_key: str, hw) -> str:
        return f"si-{digest({'base': base_key, **self.model_dump()})}"

    def train_variant(self, base: nn.Module, data, hw, recipe, calibration: list) -> nn.Module:
        import torch

        from ..train import train_model

        torch.manual_seed(recipe.seed)
        model = copy.deepcopy(base)
        for m in model.modules():  # same architecture, trained from scratch with the penalty
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        cfg = replace(recipe, l1=self.l1, epochs=self.epochs or recipe.epochs)
        return train_model(model, data, cfg).model

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> StageUpdate:
        return {
            layer.name: {"zero_outputs": (layer.mapped.w_hat == 0).all(dim=1).reshape(-1).to(layer.weight.device)}
            for layer in xmodel.crossbar_layers()  # w_hat: (groups, k, n)
        }
