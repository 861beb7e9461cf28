"""Calibration passes as observers of a layer's reads (scikit-learn's ``fit``: statistics recorded
over batches become fitted attributes - ``delta_x``, ``x_signed``, ``adc_max_abs``, ``adc_signed`` -
and reading an unfitted layer raises). A layer has no mode: while a :class:`ReadObserver` is attached
it either answers with its float layer and records the input (the DAC range pass) or reads its
ideal crossbar without the ADC and records the sensed column values; ``engine.conversion`` attaches
them for a pass and fits from what they recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from .crossbar import CrossbarLayer


class ReadObserver:
    """Records what a layer's reads see during one calibration pass."""

    reads_float: ClassVar[bool] = False  # True: the float layer answers, the crossbar is not read

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []  # one per batch read

    def on_input(self, x: torch.Tensor) -> None:
        """A layer input (only for ``reads_float`` observers)."""

    def on_sensed(self, layer: CrossbarLayer, sensed: torch.Tensor) -> None:
        """The sensed column values of a read, slices the fastest column axis, before the ADC."""


class InputRange(ReadObserver):
    """PytorX Alg. 1 line 5 (the DAC): max|x| and min x of each batch's layer input."""

    reads_float = True

    def on_input(self, x: torch.Tensor) -> None:
        self.records.append((float(x.detach().abs().max()), float(x.detach().min())))


class ColumnRange(ReadObserver):
    """PytorX Alg. 1 line 7 (the column ADC): each batch's per-slice max|I| and min I."""

    def on_sensed(self, layer: CrossbarLayer, sensed: torch.Tensor) -> None:
        per_slice = sensed.detach().reshape(-1, layer.grid.slices).abs().amax(0).double()
        self.records.append((per_slice, float(sensed.detach().min())))


class SensedMoments(ReadObserver):
    """Yu eq. 4-6: per-slice sums of the sensed column value J, of its ADC output q (the layer's
    fitted ADC; J itself with an ideal one) and of their squares and product, and the count."""

    def on_sensed(self, layer: CrossbarLayer, sensed: torch.Tensor) -> None:
        j = sensed.detach().reshape(-1, layer.grid.slices).double()
        adc = layer.adc
        q = adc(sensed.detach()).reshape(-1, layer.grid.slices).double() if adc is not None else j
        self.records.append(tuple(t.sum(0) for t in (j, j * j, q, q * q, j * q)) + (j.shape[0],))
