"""Static programming variation (RxNN sigma/mu; Jung/FPT R' = R(1 + eps); an absolute term in dG).

Applied to the programmed conductance g = g_min + level (units of dG) with standard normals per
cell and instance, z_abs and z_rel, each from its own stream (drawn only when its sigma is
non-zero), so enabling one term does not change the other's draw, and sweeping sigma scales the
same z (coupled across points):
  absolute:                          g' = g + sigma_abs z_abs
  relative, conductance, gaussian:   g' = g (1 + sigma_rel z_rel)            (RxNN)
  relative, conductance, lognormal:  g' = g exp(s z_rel - s^2/2), s^2 = ln(1 + sigma_rel^2)
                                     (mean g, standard deviation sigma_rel g)
  relative, resistance, gaussian:    g' = g / (1 + sigma_rel z_rel)          (Jung: R' = R (1 + eps));
                                     1 + sigma_rel z_rel <= 0 reads the ceiling G_max
  relative, resistance, lognormal:   g' = g exp(-s z_rel + s^2/2)            (R' has mean R, std sigma_rel R)
  level-dependent absolute (aihwkit PCM): g' = g + sigma(g_T) z_abs, sigma = sum_i c_i g_T^i uS x G_max /
                                     G_ref (:func:`poly_sigma`, from the target before the other terms)
The result is floored at 0 S and, with ``ceiling: g_max``, clipped at G_max.
"""

from __future__ import annotations

import math

import torch

from ..hardware import HardwareSpec, ProgrammingVariation
from .base import Draws, StaticEffect, Stream


def vary_relative_(g: torch.Tensor, z: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """In place: g (1 + sigma z) (RxNN), as g + (g sigma) z in three rounded steps - a fused addcmul
    rounds once on some devices and twice on others. ``sigma`` a float or a float32 scalar tensor
    (the compiled pass of :mod:`engine.fused_draws` runs these same steps)."""
    return g.add_(torch.mul(g, sigma).mul_(z))


def vary_absolute_(g: torch.Tensor, z: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """In place: g + sigma z in two rounded steps (not ``add(alpha=)``, which may fuse into one);
    ``sigma`` a float, a float32 scalar tensor or per-cell sigmas."""
    return g.add_(torch.mul(z, sigma))


def bound_(g: torch.Tensor, g_max_n: float | torch.Tensor | None) -> torch.Tensor:
    """In place: conductances floored at 0 S and, with a ceiling ``g_max_n`` (G_max / dG), clipped there."""
    g.clamp_min_(0.0)
    return g if g_max_n is None else g.clamp_max_(g_max_n)


def apply_variation(
    g: torch.Tensor,
    z_abs: torch.Tensor | None,
    z_rel: torch.Tensor | None,
    spec: ProgrammingVariation,
    delta_g_s: float,
    g_max_n: float,
    inplace: bool = False,
) -> torch.Tensor:
    """``g`` and the result in units of dG; ``g_max_n`` = G_max / dG. ``z_abs`` / ``z_rel`` may be
    None when their sigma is zero. ``inplace``: ``g`` is a fresh tensor of the result's shape that
    may be overwritten (saves passes over the cells)."""
    sigma_abs: float | torch.Tensor = spec.sigma_abs_s / delta_g_s if spec.sigma_abs_s > 0 else spec.sigma_abs_delta_g
    if not inplace:
        g = g.expand(torch.broadcast_shapes(g.shape, *(z.shape for z in (z_abs, z_rel) if z is not None))).clone()
    if spec.sigma_poly_us:  # aihwkit PCM programming noise: sigma from the target level, before any other term
        sigma_abs = poly_sigma(g / g_max_n, spec, delta_g_s * g_max_n) / delta_g_s
    if spec.sigma_rel > 0:
        assert z_rel is not None, "a relative sigma needs its normals"
        resistance = spec.domain == "resistance"
        if spec.distribution == "gaussian" and not resistance:
            vary_relative_(g, z_rel, spec.sigma_rel)
        elif spec.distribution == "gaussian":
            factor: torch.Tensor = 1.0 + spec.sigma_rel * z_rel  # R'/R
            g.div_(factor.clamp_min(1e-30)).masked_fill_(factor <= 0, g_max_n)  # non-positive R: the ceiling
        else:
            s = math.sqrt(math.log1p(spec.sigma_rel**2))
            sign = -1.0 if resistance else 1.0
            g.mul_(torch.exp(sign * s * z_rel + sign * -0.5 * s * s))
    if isinstance(sigma_abs, torch.Tensor) or sigma_abs > 0:
        assert z_abs is not None, "an absolute sigma needs its normals"
        vary_absolute_(g, z_abs, sigma_abs)
    return bound_(g, g_max_n if spec.ceiling == "g_max" else None)


def poly_sigma(g_t: torch.Tensor, spec: ProgrammingVariation, g_max_s: float) -> torch.Tensor:
    """aihwkit's programming-noise sigma in siemens at relative targets ``g_t`` = G_T / G_max:
    sum_i c_i g_t^i uS, scaled by G_max / G_ref (``apply_programming_noise_to_conductance``)."""
    sigma = torch.zeros_like(g_t)
    for c in reversed(spec.sigma_poly_us):  # Horner over the (few) coefficients
        sigma = sigma * g_t + c
    return sigma * (g_max_s / spec.poly_g_max_ref_us)  # uS x (G_max / G_ref, both in uS) x 1e-6 S/uS


class Variation(StaticEffect):
    """Static effect: programming variation (above), one normal per cell and term - absolute (stream 1)
    and relative (stream 4) - each drawn only when its sigma is non-zero."""

    name = "variation"
    streams = (Stream("z_abs", 1, "normal"), Stream("z_rel", 4, "normal"))

    def used(self, hw: HardwareSpec) -> tuple[Stream, ...]:
        z_abs, z_rel = self.streams
        return tuple(s for s, on in ((z_abs, hw.variation.absolute), (z_rel, hw.variation.sigma_rel > 0)) if on)

    def program(self, g: torch.Tensor, target: torch.Tensor, draws: Draws, hw: HardwareSpec) -> torch.Tensor:
        dev = hw.device
        z_abs, z_rel = draws.get("z_abs"), draws.get("z_rel")
        return apply_variation(g, z_abs, z_rel, hw.variation, dev.delta_g_s, dev.g_max_s / dev.delta_g_s, inplace=True)
