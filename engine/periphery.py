"""DAC input encoding and column ADC (PytorX eq. 6, 10-11 and Alg. 1; Yu's bit-serial input).

Input codes: x_hat = clamp(round(x / dx)) with dx calibrated per layer as the mean over
calibration batches of max|x| / 2**(N-1) (signed) or max x / (2**N - 1) when the layer never
sees a negative input (unsigned). With a DAC narrower than the code, the code is streamed as
``planes`` chunks of ``dac_bits`` (two's complement, the most significant chunk signed):
x_hat = sum_p 2**(d p) c_p, and the ADC outputs of each chunk are shifted and added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_RANGE = 1e-30  # a range that saw only zeros: a tiny step, so later values saturate at about 0


def full_scale_divisor(bits: int, signed: bool) -> float:
    """PytorX Alg. 1 lines 5 and 7: a range max|t| spans 2**(N-1) steps of a signed code and
    2**N - 1 steps of an unsigned one."""
    return float(2 ** (bits - 1)) if signed else float(2**bits - 1)


def range_step(max_abs: float, bits: int, signed: bool) -> float:
    """The quantiser step of a calibrated range (PytorX Alg. 1 lines 5 and 7); the one rule of the
    DAC and the ADC, in inference and in crossbar training."""
    return max(max_abs, MIN_RANGE) / full_scale_divisor(bits, signed)


class RangeTracker:
    """PytorX Alg. 1 as a fitted quantity for one quantiser: the max|t| of every batch observed, and
    the step of their mean (``fitted_step``: calibration, evaluation after training) or of the current
    batch (``batch_step``: crossbar training). The code is signed once any observed value was negative.
    ``end_epoch`` freezes an epoch's mean for evaluation while the next epoch accumulates."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.sum, self.count, self.signed = 0.0, 0, False
        self.epoch_sum, self.epoch_count = 0.0, 0

    def observe(self, max_abs: float, minimum: float) -> None:
        self.signed = self.signed or minimum < 0
        self.sum, self.count = self.sum + max_abs, self.count + 1

    def coding(self) -> InputCoding:
        return InputCoding(self.bits, self.bits, self.signed)

    def batch_step(self, t: torch.Tensor) -> float:
        """Observe ``t`` (one host sync for its min and max) and return its own step."""
        lo, hi = (float(v) for v in torch.aminmax(t.detach()))
        self.observe(max(-lo, hi), lo)
        return range_step(max(-lo, hi), self.bits, self.signed)

    def fitted_step(self) -> float:
        """The step of the mean observed range (the frozen epoch's, once there is one)."""
        mean = self.epoch_sum / max(self.epoch_count, 1) if self.epoch_count else self.sum / max(self.count, 1)
        return range_step(mean, self.bits, self.signed)

    def end_epoch(self) -> None:
        self.epoch_sum, self.epoch_count = self.sum, self.count
        self.sum, self.count = 0.0, 0


@dataclass(frozen=True)
class InputCoding:
    bits: int
    dac_bits: int
    signed: bool

    @property
    def lo(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def planes(self) -> int:
        return math.ceil(self.bits / self.dac_bits)

    @property
    def full_scale_divisor(self) -> float:
        """max|x| / divisor = dx (PytorX Alg. 1 line 5 for signed codes)."""
        return full_scale_divisor(self.bits, self.signed)

    def _widths(self) -> list[int]:
        top = self.bits - self.dac_bits * (self.planes - 1)
        return [self.dac_bits] * (self.planes - 1) + [top]

    @property
    def max_chunk(self) -> int:
        """Largest |chunk| the DAC drives; it maps to v_read_v."""
        if self.planes == 1:
            return max(-self.lo, self.hi)
        widths = self._widths()
        top = 2 ** (widths[-1] - 1) if self.signed else 2 ** widths[-1] - 1
        return max(2**self.dac_bits - 1, top)

    def plane_coefficients(self, device: torch.device | None = None) -> torch.Tensor:
        return 2.0 ** (torch.arange(self.planes, dtype=torch.float32, device=device) * self.dac_bits)

    def quantise(self, x: torch.Tensor, delta_x: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """Integer-valued float codes, written to ``out`` (shaped like ``x``) when given."""
        codes = x / delta_x if out is None else torch.div(x, delta_x, out=out)
        return codes.round_().clamp_(self.lo, self.hi)  # at most one allocation, in place after

    def split(self, codes: torch.Tensor) -> torch.Tensor:
        """(...,) codes -> (planes, ...) DAC chunks, two's complement with a signed top chunk. The
        planes-times larger shift/mask pass runs on bytes when the code fits in 8 bits."""
        if self.planes == 1:
            return codes.unsqueeze(0)
        narrow = torch.uint8 if self.bits <= 8 else torch.int32
        u = codes.to(torch.int32)
        if self.signed:
            u = u & (2**self.bits - 1)
        u = u.to(narrow)
        shifts = torch.arange(self.planes, dtype=narrow, device=codes.device) * self.dac_bits
        view = (-1,) + (1,) * codes.dim()
        # one mask for every chunk: u < 2**bits, so the top chunk (width <= dac_bits) is unchanged by
        # it; no per-read host tensor (a host-to-device copy is a sync on CUDA)
        chunks = ((u.unsqueeze(0) >> shifts.view(view)) & (2**self.dac_bits - 1)).to(codes.dtype)
        if self.signed:
            top, w = chunks[-1], self._widths()[-1]
            chunks[-1] = torch.where(top >= 2 ** (w - 1), top - 2**w, top)
        return chunks


class CodeScratch:
    """One reusable host buffer for the large input codes of the layers that share it (a converted
    model's layers): an inference read's codes are dead once its read returns and the layers read one
    after another. A fresh host tensor of several MiB comes from newly mapped pages (page faults on
    first touch, more than the quantiser's arithmetic); a small one from a free list still in cache,
    which beats a reused buffer. Measured A/B in one process (ResNet-20, 250-image batches, 4-16 MB
    codes): a trial's forward 120-245 ms faster of ~1 s; LeNet-5 (codes under 2.6 MB): 0.3 ms slower
    of 15 ms with reuse, hence the size floor. Not used on accelerators (their caching allocators reuse already),
    where autograd may keep the codes (grad enabled) or where the input is neither contiguous nor
    channels-last (the codes keep the input's layout)."""

    MIN_BYTES = 3 << 20  # below this a fresh allocation is the faster one (see above)

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def take(self, like: torch.Tensor) -> torch.Tensor | None:
        """A tensor shaped like ``like`` (its dtype and device) to write codes into; None: allocate."""
        n = like.numel()
        if (
            like.device.type != "cpu"
            or n * like.element_size() < self.MIN_BYTES
            or torch.is_grad_enabled()
            or not (like.is_contiguous() or like.is_contiguous(memory_format=torch.channels_last))
        ):
            return None
        buf = self._buffer
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self._buffer = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf.as_strided(like.shape, like.stride())  # the input's layout (a tiled conv read leaves channels last)

    def __deepcopy__(self, memo: dict) -> CodeScratch:
        return CodeScratch()  # a copied model shares a new, empty scratch among its copied layers

    def __getstate__(self) -> dict:
        return {}  # nothing worth shipping: the buffer is refilled by the next read

    def __setstate__(self, state: dict) -> None:
        self._buffer = None


@dataclass(frozen=True)
class ADC:
    """PytorX eq. 11 with clipping: code = clamp(round(I / dI), lo, hi); output code * dI.

    ``delta_i`` holds one step per weight slice (the last axis of the column layout) or a single
    step broadcast to all of them.
    """

    delta_i: torch.Tensor  # (slices,) engine current units (dG * dV_DAC)
    lo: int
    hi: int

    @classmethod
    def calibrated(cls, bits: int, max_abs: torch.Tensor, signed: bool) -> ADC:
        """PytorX Alg. 1 line 7: dI = max|I| / 2**(N-1) (signed), max I / (2**N - 1) (unsigned), per
        slice (:func:`range_step` on a tensor, which stays on its device)."""
        code = InputCoding(bits, bits, signed)
        return cls(max_abs.to(torch.float32).clamp_min(MIN_RANGE) / full_scale_divisor(bits, signed), code.lo, code.hi)

    def codes(self, current: torch.Tensor) -> torch.Tensor:
        """Integer-valued output codes; ``current``'s last axis is the slice axis (or a multiple of
        it, interleaved slice-fastest as in the physical column order)."""
        s = self.delta_i.numel()
        d = self.delta_i.to(current.device, current.dtype)
        c = current.reshape(*current.shape[:-1], -1, s) if s > 1 else current
        return (c / d).round_().clamp_(self.lo, self.hi).reshape(current.shape)

    def __call__(self, current: torch.Tensor) -> torch.Tensor:
        """Digitised current in engine units: codes * dI."""
        s = self.delta_i.numel()
        q = self.codes(current)
        d = self.delta_i.to(current.device, current.dtype)
        return (q.reshape(*q.shape[:-1], -1, s) * d).reshape(q.shape) if s > 1 else q * d
