"""Mitigation interface: every strategy is a named, parameterised component; components compose
with ``+`` (``bi+si+mmse``, Yu Fig. 4) and are applied on the same sampled hardware instance.

A component may
  * change the weight -> cell mapping (``scheme``, e.g. bit inversion);
  * need a model variant: trained offline once per sweep (``offline``, e.g. sparsity induction,
    noise-injection adaption) or derived on the worker (e.g. BN layers inserted for FPT);
  * prepare once per calibrated twin (``prepare``, e.g. MMSE's offline statistics);
  * edit or tune the programmed instance (``after_program``, e.g. error correction, FPT,
    re-training).
What a component changes it *returns* from ``prepare``/``after_program``, and the strategy applies
it in the declared order: digital output transforms (MMSE's affine, sparsity's zero outputs, drift
compensation's gain) as a :data:`StageUpdate`, {layer name: {field: value}} of
:class:`engine.crossbar.OutputStage`, through ``CrossbarModel.set_output_stage``; new programmed
states of the trial's instance (error correction's correction matrix, row remapping's physical
targets) as :class:`Reprogram`, through ``CrossbarModel.program_cells``; BatchNorm statistics (FPT) as
:class:`BatchNormStats`, through ``CrossbarModel.load_batchnorm``; float weights (re-training) as
:class:`Weights`, through ``CrossbarModel.load_weights``. No component writes a layer's
attributes (a component that must run the twin with other modules, FPT's train-mode BN copies, asks for
them through ``CrossbarModel.substituted``); what a component keeps per twin (offline statistics, initial states)
it keeps through ``CrossbarModel.memo``, keyed by the component itself (its class and parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..catalog import Scheme

if TYPE_CHECKING:  # implementations import torch when they run: the spec validates without it
    import torch
    from torch import nn

    from ..conversion import CrossbarModel
    from ..data import DataSplit
    from ..hardware import HardwareSpec
    from ..instance import LayerCells
    from ..train import TrainConfig


StageUpdate = Mapping[str, Mapping[str, Any]]  # layer name -> OutputStage fields a component sets


@dataclass(frozen=True)
class Reprogram:
    """Programmed states a component returns, {layer name: LayerCells}: the same instance's physical
    draws with other targets or a correction read beside them (``engine.instance.LayerCells``)."""

    cells: Mapping[str, LayerCells]


@dataclass(frozen=True)
class BatchNormStats:
    """BatchNorm statistics a component returns, {module name: state dict} (FPT's recalibrated running
    statistics, or the trained ones every trial starts from), loaded by ``CrossbarModel.load_batchnorm``."""

    states: Mapping[str, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Weights:
    """New float weights a component returns, {state-dict name: tensor} of the twin (re-training, RxNN
    Sec. VI, or the trained weights every trial starts from), loaded by ``CrossbarModel.load_weights``:
    the layers are mapped again and an instance already programmed is programmed again with them."""

    state: Mapping[str, torch.Tensor]


Update = StageUpdate | Reprogram | BatchNormStats | Weights  # what prepare / after_program may return


@dataclass
class TrialContext:
    """What a per-instance strategy may use besides the programmed model."""

    calibration_inputs: list = field(default_factory=list)  # unlabeled batches on the model's device
    train_loader: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y) on the device, for re-training
    seed: int = 0


class Mitigation(BaseModel):
    """One component. Subclasses declare ``name`` and their parameters as pydantic fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: ClassVar[str]
    scheme: ClassVar[Scheme] = "direct"
    offline: ClassVar[bool] = False  # its variant is trained once per sweep by the driver
    # Bumped when a change alters this component's numbers; above 1 it is part of the point id of every
    # sweep that uses the component (sweep.plan), so a resumed sweep never mixes rows of two versions.
    results_version: ClassVar[int] = 1

    def variant_key(self, base_key: str, hw: HardwareSpec) -> str | None:
        """Key of the model variant this component needs (None: the base model)."""
        return None

    def derive(self, base: nn.Module, ctx: TrialContext) -> nn.Module:
        """A locally derived variant (``offline`` False)."""
        raise NotImplementedError

    def train_variant(
        self, base: nn.Module, data: DataSplit, hw: HardwareSpec, recipe: TrainConfig, calibration: list
    ) -> nn.Module:
        """An offline variant (``offline`` True), trained once per sweep and cached by its key."""
        raise NotImplementedError

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> Update | None:
        """Before the instance is programmed (statistics kept with ``xmodel.memo``); may return
        output transforms, applied before programming (so a linear read can fold them in)."""
        return None

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> Update | None:
        """Per-instance step after the instance is programmed; may return output transforms or new
        programmed states of the instance (:class:`Reprogram`)."""
        return None

    def label(self) -> str:
        params = {k: v for k, v in self.model_dump().items() if v is not None}
        if not params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"
