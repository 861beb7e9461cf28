"""Direct mapping, SAF error correction (PytorX Alg. 2) and bit-inversion mapping (Yu eq. 7)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from ..catalog import Scheme
from .base import Mitigation, Reprogram, TrialContext

if TYPE_CHECKING:
    from ..conversion import CrossbarModel


class NoMitigation(Mitigation):
    """``none``: the trained weights mapped directly (the papers' baseline)."""

    name: ClassVar[str] = "none"


class ErrorCorrection(Mitigation):
    """``ec``: digital SAF error correction with the profiled fault map, PytorX Alg. 2.

    For every stuck cell, G_diff = G_target - G_stuck ((G - G_max) i_sa0 + (G - G_min) i_sa1 in
    the paper's notation); the periphery reads y_ec = f_adc(V G_diff+ - V G_diff-) beside the
    array and adds it digitally: y_out = y + y_ec. With an ideal ADC the corrected outputs equal
    the fault-free outputs exactly (programming variation of healthy cells is not corrected).
    """

    name: ClassVar[str] = "ec"

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> Reprogram:
        import torch

        from ..nonideal.faults import HEALTHY

        corrected = {}
        for layer in xmodel.crossbar_layers():
            cells = layer.cells
            if cells is None or cells.faults is None or cells.levels is None:
                continue
            target = cells.levels.to(cells.h.dtype)  # what was meant to be programmed, per cell
            corr = torch.sub(target, cells.h).masked_fill_(cells.faults == HEALTHY, 0.0)
            corrected[layer.name] = replace(cells, correction=corr)
        return Reprogram(corrected)


class BitInversion(Mitigation):
    """``bi``: bit-inversion mapping, Yu eq. 7 - the array of the weight's sign holds all ones and
    the other array the one's complement of |w|, so eq. 3 is unchanged and more cells sit at G_max. Needs no
    fault knowledge; it helps when cells stuck at G_max are the more common fault (Yu eq. 10)."""

    name: ClassVar[str] = "bi"
    scheme: ClassVar[Scheme] = "bit_inversion"
