"""Counter-based random numbers for static draws, in integer tensor ops on any device.

Every static draw of a hardware instance is a pure function of
(instance seed, layer index, stream, cell index), evaluated elementwise with no generator state:

    mix64(z)   = SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014; Stafford's "Mix13"):
                 z ^= z >> 30;  z *= 0xBF58476D1CE4E5B9;  z ^= z >> 27;  z *= 0x94D049BB133111EB;  z ^= z >> 31
                 (arithmetic mod 2**64, logical shifts)
    key        = mix64(mix64(mix64(seed) + GAMMA (layer + 1)) + GAMMA (stream + 1)),   GAMMA = 0x9E3779B97F4A7C15
    word(j)    = mix64(key + GAMMA (j + 1))                       (64 bits: SplitMix64's j-th output from state key)
    u32(c)     = lo32(word(c // 2)) for even c,  hi32(word(c // 2)) for odd c

so cell c of a layer's cells in their canonical layout (arrays, groups, t_r, t_c, rows, cols)
gets one 32-bit uniform integer per stream. Normals come in Box-Muller pairs from one word j:
z(2j) = r cos(theta), z(2j + 1) = r sin(theta), r = sqrt(-2 ln u1), u1 = float32(hi32 + 1) / 2**32
in (0, 1], theta = 2 pi float32(lo32 read as a signed int32) / 2**32 in [-pi, pi) (|z| <= 6.66).
All layers of a model are hashed in one pass (each with its own key and counters), so sampling
costs a few tensor operations per trial, not per layer.

Why a keyed SplitMix64 and not Philox4x32-10: both are counter-based and give the same integer
bits on every device by construction, but torch has no unsigned 32-bit multiply-high, so Philox's
ten rounds cost ~24 ns per 32-bit word in eager int64 tensor ops on the 2-core CPU against
~1.4 ns here; static sampling would cost more than the inference it feeds. SplitMix64's output
function passes BigCrush (Steele et al.); keys are themselves mixed, so two streams are two
segments of one SplitMix64 sequence at pseudo-random offsets (overlap probability ~ n / 2**63).
The statistical tests (``tests/test_counter_rng.py``) check uniformity, normality and the
independence of streams, layers and neighbouring instances.

Integer words and uniforms are bit-identical on every device; normals go through the device's
float32 ``log``, ``cos`` and ``sin``, which are not correctly rounded, so CPU and CUDA may differ
in the last bit of a normal. Instances are a leading tensor dimension: nothing depends on how
many are drawn together. int64 multiplication wraps modulo 2**64 in torch (two's complement) on
CPU and CUDA; the tests check every bit against a numpy ``uint64`` reference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_MASK32 = 0xFFFF_FFFF


def _signed(v: int) -> int:
    """uint64 constant -> the int64 with the same bits (torch has no uint64 arithmetic)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


_GAMMA_S, _C1_S, _C2_S = _signed(GAMMA), _signed(_C1), _signed(_C2)


def mix64_(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser, in place on an int64 tensor (bits as uint64). Shifts are arithmetic in
    torch, so each is masked to a logical one; one scratch tensor serves all three."""
    t = torch.empty_like(z)
    torch.bitwise_right_shift(z, 30, out=t).bitwise_and_((1 << 34) - 1)
    z.bitwise_xor_(t).mul_(_C1_S)
    torch.bitwise_right_shift(z, 27, out=t).bitwise_and_((1 << 37) - 1)
    z.bitwise_xor_(t).mul_(_C2_S)
    torch.bitwise_right_shift(z, 31, out=t).bitwise_and_((1 << 33) - 1)
    return z.bitwise_xor_(t)


def mix64_int(z: int) -> int:
    """The same finaliser on a Python int (keys, references)."""
    m = (1 << 64) - 1
    z &= m
    z = ((z ^ (z >> 30)) * _C1) & m
    z = ((z ^ (z >> 27)) * _C2) & m
    return z ^ (z >> 31)


def stream_keys(
    seeds: Sequence[int] | torch.Tensor, layer: int, stream: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(instances,) int64 keys for (seed, layer, stream). From host integers (the sweep's case)
    the few scalars are computed exactly on the host and copied once; from a tensor of seeds,
    elementwise on its device."""
    if isinstance(seeds, torch.Tensor):
        k = mix64_(seeds.to(torch.int64).clone()).add_(_signed(GAMMA * (layer + 1)))
        return mix64_(mix64_(k).add_(_signed(GAMMA * (stream + 1))))
    if any(int(s) < 0 for s in seeds):
        raise ValueError(f"instance seeds must be >= 0 (got {list(seeds)})")
    keys = stream_keys_signed(seeds, [layer], [stream])
    return torch.tensor([k[0][0] for k in keys], dtype=torch.int64, device=device)


def stream_keys_signed(seeds: Sequence[int], layers: Sequence[int], streams: Sequence[int]) -> list[list[list[int]]]:
    """[seed][stream][layer] keys as int64 values (their uint64 bits), each intermediate mix made once."""
    g = (1 << 64) - 1
    out = []
    for seed in seeds:
        base = mix64_int(int(seed))
        per_layer = [mix64_int((base + GAMMA * (li + 1)) & g) for li in layers]
        out.append([[_signed(mix64_int(k + GAMMA * (st + 1))) for k in per_layer] for st in streams])
    return out


def stream_key_int(seed: int, layer: int, stream: int) -> int:
    """The same key as a Python int in [0, 2**64) (references, documentation)."""
    k = mix64_int(mix64_int(seed) + GAMMA * (layer + 1))
    return mix64_int(k + GAMMA * (stream + 1))


def words(keys: torch.Tensor, n_words: int | Sequence[int]) -> torch.Tensor:
    """(instances, total) int64 words mix64(key + GAMMA (j + 1)) on ``keys``' device.

    ``keys`` (instances,) with ``n_words`` an int; or (instances, S) keys of S segments (one per
    layer) with ``n_words`` their lengths, concatenated: j restarts at 0 in every segment, so a
    segment's words do not depend on the others, and all layers of a model hash in one pass.
    (Segment s starting at word t_s is GAMMA (t + 1) + (key_s - GAMMA t_s) for global index t:
    one constant per segment added to one global counter.)"""
    if isinstance(n_words, int):
        keys, n_words = keys.reshape(-1, 1), [n_words]
    total = int(sum(n_words))
    ctr = _counters(total, keys.device)
    starts = [0]
    for n in n_words[:-1]:
        starts.append(starts[-1] + n)
    adj = keys.clone()  # (I, S): key_s - GAMMA t_s (wrapping), GAMMA t_s = ctr[t_s - 1]: no host data
    if len(starts) > 1:
        adj[:, 1:] -= torch.cat([ctr[t - 1 : t] for t in starts[1:]])
    out = ctr.expand(keys.shape[0], total).clone()
    for s, (t, n) in enumerate(zip(starts, n_words)):  # one in-place add per layer segment
        out[:, t : t + n] += adj[:, s : s + 1]
    return mix64_(out)


def _counters(total: int, device: torch.device) -> torch.Tensor:
    """GAMMA (j + 1) for j < total (read-only: :func:`words` adds its keys to a copy). Small models'
    counters are kept per device: a trial hashes the same lengths every time, and the arange and
    product cost more than the copy."""
    if total <= _CACHED_COUNTERS:
        return _cached_counters(total, device)
    return torch.arange(1, total + 1, dtype=torch.int64, device=device).mul_(_GAMMA_S)


_CACHED_COUNTERS = 1 << 20  # words (8 MB); larger layers' hashing dwarfs building their counters


@functools.lru_cache(maxsize=8)
def _cached_counters(total: int, device: torch.device) -> torch.Tensor:
    return torch.arange(1, total + 1, dtype=torch.int64, device=device).mul_(_GAMMA_S)


def _halves(n: int | Sequence[int]) -> int | list[int]:
    return (n + 1) // 2 if isinstance(n, int) else [(k + 1) // 2 for k in n]


def _trim(out: torch.Tensor, n: int | Sequence[int]) -> torch.Tensor:
    """(I, 2 * words) -> (I, n) for one segment; segments stay padded to an even length."""
    return out[:, :n] if isinstance(n, int) else out


def bits32(keys: torch.Tensor, n: int | Sequence[int]) -> torch.Tensor:
    """(instances, n) int32: the raw 32-bit draws, cell c the low (even c) or high (odd c) half of
    word c // 2 - the words viewed as int32 pairs, no copy (little-endian, as on every device torch
    supports). Unsigned order: ``u32 = bits & 0xFFFFFFFF``; ``bits ^ -2**31`` orders like u32 - 2**31."""
    w = words(keys, _halves(n))
    return _trim(w.view(torch.int32), n)


def uint32(keys: torch.Tensor, n: int | Sequence[int]) -> torch.Tensor:
    """(instances, n) uniform 32-bit integers in [0, 2**32) as int64: cell c takes the low half of
    word c // 2 for even c and the high half for odd c. With segments (see :func:`words`), the
    concatenation of each segment padded to an even length."""
    return bits32(keys, n).to(torch.int64).bitwise_and_(_MASK32)


def uniform(keys: torch.Tensor, n: int | Sequence[int]) -> torch.Tensor:
    """(instances, n) float32 uniforms in [0, 1) with 24 bits: (u32 >> 8) / 2**24, exact on every device."""
    return (uint32(keys, n) >> 8).to(torch.float32).mul_(2.0**-24)


def normal(keys: torch.Tensor, n: int | Sequence[int]) -> torch.Tensor:
    """(instances, n) float32 standard normals, a Box-Muller pair from each word: cell 2j takes
    r cos(theta) and cell 2j + 1 r sin(theta) of word j, r = sqrt(-2 ln u1), u1 = float32(hi32 + 1)
    / 2**32, theta = 2 pi float32(lo32 as a signed int32) / 2**32 in [-pi, pi) (segments as in
    :func:`uint32`)."""
    w = words(keys, _halves(n))
    u1 = (w >> 32).bitwise_and_(_MASK32).add_(1).to(torch.float32).mul_(2.0**-32)  # in (0, 1]
    lo = w.view(torch.int32)[..., 0::2].to(torch.float32)
    del w
    return _trim(box_muller(u1, lo), n)


def box_muller(u1: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """(I, 2 m) normals from (I, m) ``u1`` in (0, 1] and ``lo`` = float32 of the signed low 32 bits
    (both exact functions of the words' integer bits; consumed): the only floating-point step of a
    normal draw, shared by every way the words are made (:mod:`engine.fused_draws`)."""
    r = u1.log_().mul_(-2.0).sqrt_()
    theta = lo.mul_(2.0 * math.pi * 2.0**-32)
    # cos and sin on contiguous tensors (the CPU's vectorised kernels; a strided output falls back to
    # the scalar loop, same values at 2.5x the cost), each times r, then interleaved once
    out = torch.stack((torch.cos(theta).mul_(r), torch.sin(theta).mul_(r)), dim=-1)
    return out.reshape(r.shape[0], -1)


U32_END = 1 << 32  # the end of the 32-bit draws' range, as an interval bound


def indicators(bits: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """float32 0/1 tensors, one per half-open interval [a, b) of ``bounds`` (0 <= a <= b <= 2**32):
    1 where the unsigned 32-bit draw u lies in it. ``bits``: the raw int32 bits of :func:`bits32`
    (compared in unsigned order without widening) or int64 values in [0, 2**32). Intervals of fixed
    integer bounds on one uniform draw are how coupled categorical draws (e.g. stuck-at faults) are
    made: each probability is exact to 2**-32 and the same on every device. ``u < t`` is computed as
    ``t - clamp(u, t - 1, t)`` in integers (a boolean mask costs several times more per cell on a CPU)."""
    for a, b in bounds:
        if not 0 <= a <= b <= U32_END:
            raise ValueError(f"interval [{a}, {b}) is not within [0, 2**32)")
    shift = 0
    if bits.dtype == torch.int32:  # u < t  <=>  (bits ^ -2**31) < t - 2**31 as signed int32
        bits, shift = bits ^ -(2**31), -(2**31)
    below: dict[int, torch.Tensor] = {}

    def below_(t: int) -> torch.Tensor:  # 1 where u < t, else 0, float32 (made once per distinct bound)
        if t not in below:
            below[t] = bits.clamp(t + shift - 1, t + shift).sub_(t + shift).neg_().to(torch.float32)
        return below[t]

    out = []
    for a, b in bounds:
        if a == b:
            out.append(torch.zeros_like(bits, dtype=torch.float32))
        elif a == 0 and b == U32_END:
            out.append(torch.ones_like(bits, dtype=torch.float32))
        elif a == 0:
            out.append(below_(b))  # read-only operands: one tensor may serve two intervals
        elif b == U32_END:
            out.append(torch.neg(below_(a)).add_(1.0))
        else:
            out.append(torch.sub(below_(b), below_(a)))
    return out
