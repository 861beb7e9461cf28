"""Conductance drift and accumulated 1/f read noise after programming (aihwkit's PCM statistical
model, ``aihwkit.inference.noise.pcm.PCMLikeNoiseModel``; Nandakumar et al., ICECS 2019).

Conductances here are relative to G_max: g_T = G_target / G_max (clipped at 1e-7, as aihwkit does).
  drift exponent (``generate_drift_coefficients``):
    mu(g_T)    = clamp(-0.0155 ln g_T + 0.0244, 0.049, 0.1)
    sigma(g_T) = clamp(-0.0125 ln g_T - 0.0059, 0.008, 0.045)
    nu = |mu + sigma z|, z ~ N(0, 1) per cell (``power_law``: mu, sigma given, the same for every level)
  drift (``apply_drift_noise_to_conductance``): G(t) = G_prog (t / t0)^(-nu) for t > t0
  1/f noise: sigma_1f = Q_s sqrt(ln((t + t_read) / (2 t_read))), Q_s = min(0.0088 / max(g_T^0.65, 1e-3), 0.2);
    a read sees G(t) (1 + sigma_1f z).
ReRAM relaxation (aihwkit ``ReRamWan2022NoiseModel``, Wan et al., Nature 2022): G(t) = G_target +
  sigma_t(g_T) z with sigma_t = sum_i c_i(t) g_T^i uS at G_max = 40 uS (x G_max / 40 uS). aihwkit
  states that scaling but, as released, assigns the 40 uS reference to an attribute its polynomial
  does not read, so its output is unscaled; we apply the stated scaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..hardware import RERAM_WAN2022_TIMES, DriftSpec, HardwareSpec
from .base import Draws, ProgramContext, ReadContext, ReadEffect, StaticEffect, Stream
from .variation import vary_absolute_

_ZERO_CLIP = 1e-7


def drift_exponents(g_rel: torch.Tensor, z: torch.Tensor, spec: DriftSpec) -> torch.Tensor:
    """Per-cell drift exponents nu from target conductances relative to G_max and standard normals."""
    if spec.model == "pcm":
        log_g = torch.log(g_rel.clamp_min(_ZERO_CLIP))
        mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
        sigma = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
        return (mu + sigma * z).abs()
    return (spec.nu_mean + spec.nu_std * z).abs()


def drift_factor(nu: torch.Tensor, t_over_t0: float) -> torch.Tensor:
    """(t / t0)^(-nu); 1 at t = t0."""
    return torch.exp(-math.log(t_over_t0) * nu) if t_over_t0 > 1.0 else torch.ones_like(nu)


def flicker_sigma(g_rel: torch.Tensor, spec: DriftSpec, t_s: float) -> torch.Tensor:
    """Relative std of the accumulated 1/f read noise at time t (seconds since programming + t0)."""
    q_s = (0.0088 / g_rel.abs().pow(0.65).clamp_min(1e-3)).clamp_max(0.2)
    return q_s * math.sqrt(math.log((t_s + spec.t_read_s) / (2 * spec.t_read_s)))


def relaxation_sigma_s(g_rel: torch.Tensor, time_s: float, g_max_s: float) -> torch.Tensor:
    """Wan et al. (2022) relaxation std in siemens at ``time_s`` (one of the fitted times)."""
    coeff = RERAM_WAN2022_TIMES[time_s]
    sigma_us = torch.zeros_like(g_rel)
    for c in reversed(coeff):  # Horner: c0 + g (c1 + g (c2 + ...))
        sigma_us = sigma_us * g_rel + c
    return sigma_us * 1e-6 * (g_max_s / 40e-6)


def apply_drift(g: torch.Tensor, g_target: torch.Tensor, z: torch.Tensor, hw: HardwareSpec) -> torch.Tensor:
    """In place on ``g`` (programmed conductances, dG units, one per instance) at ``hw.time_s``:
    ``reram_wan2022`` adds sigma_t(g_T) z, the other models multiply by (t/t0)^(-nu); ``g_target``
    (dG units, G_min included) sets g_T. At no time (``time_s`` unset) nothing changes."""
    dev = hw.device
    g_rel = g_target * (dev.delta_g_s / dev.g_max_s)
    if hw.drift.model == "reram_wan2022":
        if hw.time_s is not None:
            vary_absolute_(g, z, relaxation_sigma_s(g_rel, hw.time_s, dev.g_max_s) / dev.delta_g_s).clamp_min_(0.0)
        return g
    return g.mul_(drift_factor(drift_exponents(g_rel, z, hw.drift), hw.drift_time_factor))


class Drift(StaticEffect):
    """Static effect: the state at ``hardware.time_s`` after programming (drift or relaxation, above),
    from the target conductance and one normal per cell (stream 5)."""

    name = "drift"
    streams = (Stream("z_drift", 5, "normal"),)
    needs_target = True

    def used(self, hw: HardwareSpec) -> tuple[Stream, ...]:
        return self.streams if hw.drift.model != "none" else ()

    def program(self, g: torch.Tensor, target: torch.Tensor, draws: Draws, hw: HardwareSpec) -> torch.Tensor:
        return apply_drift(g, target, draws["z_drift"], hw)


class Flicker(ReadEffect):
    """Read effect: the accumulated 1/f noise at ``hardware.time_s`` (aihwkit PCM, above): a read sees
    G(t) (1 + sigma_1f z), sigma_1f from each cell's target level; on a bit line a Gaussian of variance
    sum_r (G_r(t) sigma_r)^2 V_r^2."""

    name = "read_noise_1f"

    def used(self, hw: HardwareSpec) -> bool:
        return hw.drift.read_noise_1f

    def operands(self, ctx: ProgramContext) -> dict[str, Any]:
        hw = ctx.hw
        assert hw.time_s is not None  # validation: 1/f noise needs hardware.time_s
        sigma = flicker_sigma(ctx.target_rel(), hw.drift, hw.time_s + hw.drift.t0_s)
        return {"g_sigma_sq": ctx.op.operand((ctx.g_phys * sigma) ** 2)}

    def add_noise(
        self, current: torch.Tensor, v: torch.Tensor, ops: Mapping[str, Any], ctx: ReadContext
    ) -> torch.Tensor:
        var = ctx.op.apply(v * v, ops["g_sigma_sq"])
        return current + var.clamp_min(0).sqrt() * ctx.randn(var.shape, var)
