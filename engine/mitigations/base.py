"""Mitigation interface: every strategy is a named, parameterised component; components compose
with ``+`` (``bi+si+mmse``, Yu Fig. 4) and are applied on the same sampled hardware instance.

A component may
  * change the weight -> cell mapping (``scheme``, e.g. bit inversion);
  * ask for a model variant trained offline (``variant``, e.g. sparsity induction);
  * edit or tune the programmed instance (``after_program``, e.g. error correction, FPT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from ..convert import CrossbarModel
from ..mapping import Scheme


@dataclass
class TrialContext:
    """What a per-instance strategy may use besides the programmed model."""

    calibration_inputs: list = field(default_factory=list)  # unlabeled batches on the model's device
    train_loader: object | None = None  # labeled batches, for strategies that re-train
    seed: int = 0


class Mitigation(BaseModel):
    """One component. Subclasses declare ``name`` and their parameters as pydantic fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    scheme: ClassVar[Scheme] = "direct"

    @property
    def variant(self) -> str | None:
        """Key of the offline-trained model variant this component needs (None: the base model)."""
        return None

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> None:
        """Per-instance step after the instance is programmed (default: nothing)."""

    def label(self) -> str:
        params = self.model_dump()
        if not params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"
