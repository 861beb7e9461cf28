"""``mmse``: MMSE early denoising of column outputs, Yu eq. 4-6.

Per layer and weight slice the digitised column value q (ADC output, MAC units) is replaced by the
linear MMSE estimate of the noise-free column current J and a hard decision (nearest integer,
natural number for a single array's current):
    J_hat = round( E[J] + Cov(J, q) / Var(q) (q - E[q]) ).
With q = J + n and n independent of J (Yu's AWGN model) Cov(J, q) = s_j^2, Var(q) = s_j^2 + s_n^2
and E[q] = E[J], which is exactly Yu eq. 4: J_hat = s_j^2/(s_j^2+s_n^2) J_n + s_n^2/(s_j^2+s_n^2) E[J].
A coarse ADC's error is not independent of J (a 1-bit ADC saturates), so the moments of J and q
are measured offline on the calibration batch with the ideal crossbar and the ADC (Yu: "from a
batch of training data"); the column AWGN, independent and known offline (Yu's one-time noise
estimation), adds s_n^2 to Var(q). ``estimate: yu_eq6`` replaces E[J] and s_j^2 by eq. 5-6 as
printed, E[j] = r p_v p_g and s_j^2 = r^2 p_v p_g (1 - p_v p_g), with p_v the measured fraction of
non-zero DAC chunks and p_g the fraction of ones among the cells holding weight digits (tile
padding excluded; meaningful for 1-bit cells and a 1-bit DAC), in the eq. 4 form.
The coefficients are constants at inference time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from .base import Mitigation, StageUpdate, TrialContext

if TYPE_CHECKING:
    from ..conversion import CrossbarModel


class MMSEDenoising(Mitigation):
    name: ClassVar[str] = "mmse"
    estimate: Literal["empirical", "yu_eq6"] = "empirical"

    def _moments(self, xmodel: CrossbarModel, ctx: TrialContext) -> dict:
        """The offline moments of J and q, measured once per twin and estimate (the memo key is this
        component's value)."""

        def measure() -> dict:
            moments = xmodel.sensed_moments(ctx.calibration_inputs)
            if self.estimate == "yu_eq6":
                layers = xmodel.crossbar_layers()
                moments = {la.name: _yu_eq6(la, ctx.calibration_inputs, moments[la.name]) for la in layers}
            return moments

        return xmodel.memo(self, measure)

    def prepare(self, xmodel: CrossbarModel, ctx: TrialContext) -> None:
        self._moments(xmodel, ctx)  # before programming: measuring programs the ideal crossbar

    def after_program(self, xmodel: CrossbarModel, ctx: TrialContext) -> StageUpdate:
        moments = self._moments(xmodel, ctx)
        noise = xmodel.hw.column_awgn.sigma_lsb**2
        update = {}
        for layer in xmodel.crossbar_layers():
            m = moments[layer.name]
            a = m["cov_jq"] / (m["var_q"] + noise).clamp_min(1e-30)
            update[layer.name] = {"mmse": (a.float(), (m["mean_j"] - a * m["mean_q"]).float())}
        return update


def _yu_eq6(layer, inputs, empirical: dict) -> dict:
    """E[j] = r p_v p_g, s_j^2 = r^2 p_v p_g (1 - p_v p_g) (Yu eq. 5-6 as printed), in eq. 4 form
    (q = J + n: E[q] = E[J], Cov = s_j^2, Var(q) = s_j^2 + the measured ADC error)."""
    import torch

    r = layer.grid.rows
    codes = torch.cat([layer.coding.quantise(x, layer.fitted.delta_x).flatten() for x in inputs])
    p_v = float((layer.coding.split(codes) != 0).double().mean())
    # fraction of ones over the cells that hold weight digits (both arrays); padding cells of
    # partly used tiles are not part of the weight and would bias p_g low
    p_g = float((layer.grid.unplace(layer.target_levels()) > 0).double().mean())
    p = p_v * p_g
    mean = torch.full_like(empirical["mean_j"], r * p)
    var_j = torch.full_like(empirical["var_j"], r * r * p * (1 - p))
    adc_err = empirical["var_q"] - 2 * empirical["cov_jq"] + empirical["var_j"]  # Var(q - J)
    return {"mean_j": mean, "var_j": var_j, "mean_q": mean, "var_q": var_j + adc_err, "cov_jq": var_j}
