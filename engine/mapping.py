"""Weight -> cell-level mapping (PytorX eq. 5, 8-9; Yu eq. 2 and 7; Jung Table I).

Quantisation (PytorX Alg. 1, line 4, per layer): dw = max|w| / M, M = 2**(weight_bits-1) - 1,
w_hat = clamp(round(w / dw), -M, M), so that y = dw * dx * sum_i w_hat_i x_hat_i (eq. 5).
Alg. 1 line 4 prints dw = max|w| / 2**N. Read with an N-bit signed code (sign included, as
``weight_bits`` is), that step would need N + 1 magnitude bits for max|w| and the code would clip
every |w| > max|w| / 2; the symmetric signed step max|w| / (2**(N-1) - 1) maps max|w| exactly to the
largest code and wastes no level. This is a deliberate departure, made here.

Slicing (Yu eq. 2 generalised to b-bit cells): a magnitude m is stored as the digits
m = sum_s 2**(b s) d_s, d_s in [0, 2**b - 1], least significant slice first.

Schemes, each returning per-array digits whose signed combination gives back w_hat:
  * ``direct`` differential (PytorX eq. 9, Yu eq. 2): G+ holds |w_hat| where w_hat > 0, G-
    where w_hat < 0, the other array level 0 (G_min);
  * ``bit_inversion`` differential (Yu eq. 7): the array of the weight's sign (G+ for w_hat > 0)
    holds all-ones and the other array the one's complement of |w_hat|; (all-ones) - (complement)
    = |w_hat|, so eq. 3 is unchanged;
  * ``direct`` offset (Jung "unbalanced"): one array holds u = w_hat + M, a reference column per
    slice holds the digits of M; I_data - I_ref gives back w_hat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .catalog import Scheme  # noqa: F401 - re-exported
from .hardware import HardwareSpec


def quantise_weights(w: torch.Tensor, weight_bits: int) -> tuple[torch.Tensor, float]:
    """Per-layer symmetric quantisation, PytorX Alg. 1 line 4. Returns (w_hat int64, dw)."""
    m = 2 ** (weight_bits - 1) - 1
    wmax = float(w.detach().abs().max())
    delta = wmax / m if wmax > 0 else 1.0
    w_hat = torch.round(w.detach() / delta).clamp_(-m, m).to(torch.int64)
    return w_hat, delta


def slice_digits(mag: torch.Tensor, slices: int, bits_per_cell: int) -> torch.Tensor:
    """Digits of non-negative integers: (...,) -> (..., slices), least significant first."""
    shifts = torch.arange(slices, device=mag.device, dtype=torch.int64) * bits_per_cell
    return (mag.unsqueeze(-1) >> shifts) & (2**bits_per_cell - 1)


def slice_weights(slices: int, bits_per_cell: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Shift-and-add coefficients 2**(b s) of the slices (Yu eq. 3, f), float64 on ``device``."""
    return 2.0 ** (torch.arange(slices, dtype=torch.float64, device=device) * bits_per_cell)


@dataclass(frozen=True)
class MappedWeights:
    """Integer cell digits of one layer and how to combine them back."""

    digits: torch.Tensor | None  # (arrays, groups, k, n, slices) int64; None once placed on tiles
    reference: torch.Tensor | None  # (slices,) int64, offset realisation only
    delta_w: float
    w_hat: torch.Tensor  # (groups, k, n) int64


def map_weights(w: torch.Tensor, hw: HardwareSpec, scheme: Scheme = "direct") -> MappedWeights:
    """Map a (groups, k, n) float weight tensor to cell digits for ``hw``."""
    w_hat, delta = quantise_weights(w, hw.mapping.weight_bits)
    b, s = hw.device.bits_per_cell, hw.slices
    full = 2**b - 1
    if hw.mapping.realisation == "differential":
        mag = slice_digits(w_hat.abs(), s, b)
        pos = (w_hat > 0).unsqueeze(-1)
        if scheme == "direct":
            zero = torch.zeros_like(mag)
            plus, minus = torch.where(pos, mag, zero), torch.where(pos, zero, mag)
        elif scheme == "bit_inversion":
            ones, comp = torch.full_like(mag, full), full - mag
            plus, minus = torch.where(pos, ones, comp), torch.where(pos, comp, ones)
        else:
            raise ValueError(f"unknown mapping scheme {scheme!r}")
        return MappedWeights(torch.stack([plus, minus]), None, delta, w_hat)
    if scheme != "direct":
        raise ValueError(f"mapping scheme {scheme!r} needs the differential realisation")
    m = 2 ** (hw.mapping.weight_bits - 1) - 1
    digits = slice_digits(w_hat + m, s, b).unsqueeze(0)
    reference = slice_digits(torch.tensor(m, device=w.device), s, b)
    return MappedWeights(digits, reference, delta, w_hat)


def decode_levels(levels: torch.Tensor, hw: HardwareSpec, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Signed integer weight represented by per-array levels (..., arrays, groups, k, n, slices).

    Levels may be real-valued (conductance above G_min in units of dG); the result is then the
    weight the analog array actually realises, in units of dw.
    """
    coef = slice_weights(hw.slices, hw.device.bits_per_cell, levels.device).to(levels.dtype)
    if hw.mapping.realisation == "differential":
        diff = levels.select(-5, 0) - levels.select(-5, 1)
    else:
        assert reference is not None, "the offset realisation decodes against its reference column"
        diff = levels.select(-5, 0) - reference.to(levels.dtype)
    return (diff * coef).sum(-1)
