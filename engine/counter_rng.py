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
gets one 32-bit uniform integer per stream. Normals come in Box-Muller pairs (Box & Muller 1958)
from one word j: z(2j) = r cos(theta), z(2j + 1) = r sin(theta), r = sqrt(-2 ln u1),
u1 = float32(2 (hi32 >> 2) + 1) / 2**31 in (0, 1], theta = 2 pi lo32 / 2**32 (|z| <= 6.56), evaluated with
integer operations and correctly rounded float32 +, -, *, / only (:func:`box_muller`), so a normal
has the same bits on every device and compiler, and a numpy reference reproduces it bit for bit.
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

Words, uniforms and normals are bit-identical on every device: torch's own float32 ``log``, ``sqrt``,
``cos`` and ``sin`` are not correctly rounded (on this CPU eager ``sqrt`` is not; a compiled one
is), so none is used. Instances are a leading tensor dimension: nothing depends on how
many are drawn together. int64 multiplication wraps modulo 2**64 in torch (two's complement) on
CPU and CUDA; the tests check every bit against a numpy ``uint64`` reference.
"""

from __future__ import annotations

import functools
import struct
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
    r cos(theta) and cell 2j + 1 r sin(theta) of word j (:func:`box_muller`; segments as in
    :func:`uint32`)."""
    return _trim(box_muller(words(keys, _halves(n))), n)


def _f32(bits: int) -> float:
    """The float32 with these bits, as a Python float (exact: every backend rounds the same operand)."""
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# ln(m) on [sqrt(1/2), sqrt(2)): FreeBSD msun e_logf.c (from Sun's fdlibm), max error < 1 ulp
_LN2_HI, _LN2_LO = _f32(0x3F317180), _f32(0x3717F7D1)  # ln 2 = hi + lo, hi with 12 trailing zero bits
_LG1, _LG2, _LG3, _LG4 = _f32(0x3F2AAAAA), _f32(0x3ECCCE13), _f32(0x3E91E9EE), _f32(0x3E789E26)
_SQRT_HALF = 0x3F3504F3  # float32 bits of sqrt(1/2)
# sin and cos on [-pi/4, pi/4]: Cephes sinf.c / cosf.c (S. Moshier), relative error ~1e-7
_SIN1, _SIN2, _SIN3 = _f32(0xBE2AAAA3), _f32(0x3C08839E), _f32(0xB94CA1F9)
_COS1, _COS2, _COS3 = _f32(0x3D2AAAA5), _f32(0xBAB6061A), _f32(0x37CCF5CE)
_PHI = _f32(0x30C90FDB)  # float32(pi / 2**31): radians per unit of the 32-bit angle
_RSQRT_GUESS = 0x5F3759DF  # 1/sqrt(y) to 3.5 % from y's bits (Lomont 2003); Newton: 1.8e-3, 4.6e-6, 3e-11


def box_muller(w: torch.Tensor) -> torch.Tensor:
    """(I, m) int64 words -> (I, 2 m) float32 normals r cos(theta), r sin(theta) per word (interleaved),
    r = sqrt(-2 ln u1), theta = 2 pi lo32 2**-32 (Box & Muller 1958), u1 = float32(2 j + 1) 2**-31 with
    j = hi32 >> 2: the midpoints of 2**30 equal cells of (0, 1), rounded to float32 (so u1 may be 1).

    Only integer operations and correctly rounded float32 +, -, *, / (no fused multiply-add: each is
    its own kernel eagerly, and Inductor compiles with -ffp-contract=off), in a fixed order, so the
    bits are the same on every device, eager or compiled (:mod:`engine.fused_draws`):

    * ln u1 = k ln 2 + ln m, u1 = 2**k m with m in [sqrt(1/2), sqrt(2)) from the float's bits, and
      ln m = f - hfsq + s (hfsq + R(s**2)), f = m - 1, s = f / (2 + f), hfsq = f**2 / 2 (FreeBSD
      ``logf``, < 1 ulp);
    * r = y q, y = -2 ln u1, q = 1/sqrt(y) by three Newton steps q <- q (3/2 - y/2 q**2) from the
      exponent-halving guess (relative error < 1e-10 before rounding; y = 0 gives r = 0);
    * theta = (pi/2) a + phi: a the quadrant, phi = (pi / 2**31) t, t = lo32 - 2**30 a in
      [-2**29, 2**29) exactly, then Cephes' sin and cos polynomials on |phi| <= pi/4 and the quadrant's
      swap and signs (sign flips on the float bits: exact).

    Accuracy against float64 evaluation of the same u1 and theta: below 1e-6 absolute (|z| <= 6.56).
    After splitting each word into its 32-bit halves, everything is int32 operations, int32 -> float32
    conversions and float32 arithmetic (:func:`_radius`, :func:`_angle`, :func:`_normals`), so the
    compiled pass runs it apart from the 64-bit hashing (:func:`box_muller_from`)."""
    radius = _radius(torch.bitwise_right_shift(w, 32).to(torch.int32))  # the high halves, freed after
    return _normals(*radius, *_angle(w.to(torch.int32), consume=True))


def box_muller_from(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """:func:`box_muller` from each word's low and high 32 bits, (I, m) int32 each (left unchanged):
    the (I, 2 m) interleaved normals."""
    return _normals(*_radius(hi), *_angle(lo, consume=False))


def _radius(hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k and m of u1 = 2**k m, m in [sqrt(1/2), sqrt(2)), from the words' high halves (int32)."""
    i32, f32 = torch.int32, torch.float32
    # radius: x = float32(2 (hi32 >> 2) + 1) = u1 2**31; its bits, shifted so the mantissa lands in
    # [sqrt(1/2), sqrt(2)). (hi >> 1) & (2**31 - 1) = hi32 >> 1; setting bit 0 makes it 2 (hi32 >> 2) + 1.
    bits = torch.bitwise_right_shift(hi, 1).bitwise_and_(0x7FFF_FFFF).bitwise_or_(1).to(f32).view(i32)
    bits.add_(0x3F800000 - _SQRT_HALF)
    k = torch.bitwise_right_shift(bits, 23).sub_(127 + 31).to(f32)  # u1 = 2**k m
    return k, bits.bitwise_and_(0x7FFFFF).add_(_SQRT_HALF).view(f32)


def _angle(lo: torch.Tensor, consume: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The quadrant a, t = lo32 - 2**30 a as float32 and whether a is odd (0/1), from the words' low
    halves (int32; overwritten where ``consume``: an eager draw keeps one array fewer)."""
    # lo32 = 2**30 a + t, a = round(lo32 / 2**30) (mod 4), t in [-2**29, 2**29) (low 30 bits, signed)
    quadrant = torch.bitwise_right_shift(lo, 29).add_(1).bitwise_right_shift_(1)
    low30 = lo.bitwise_and_((1 << 30) - 1) if consume else torch.bitwise_and(lo, (1 << 30) - 1)
    t = low30.bitwise_xor_(1 << 29).sub_(1 << 29).to(torch.float32)
    return quadrant, t, torch.bitwise_and(quadrant, 1).to(torch.float32)  # odd quadrants swap sin and cos


def _normals(
    k: torch.Tensor, m: torch.Tensor, quadrant: torch.Tensor, t: torch.Tensor, odd: torch.Tensor
) -> torch.Tensor:
    """Box-Muller's float arithmetic on :func:`_radius`' and :func:`_angle`'s operands (all consumed)."""
    i32, f32 = torch.int32, torch.float32
    f = m.sub_(1.0)  # m - 1, exact
    s = torch.add(f, 2.0)
    s = torch.div(f, s)
    z = torch.mul(s, s)
    v = torch.mul(z, z)
    big_r = torch.mul(v, _LG4).add_(_LG2).mul_(v)  # R = t2 + t1 as in e_logf.c
    big_r.add_(v.mul_(_LG3).add_(_LG1).mul_(z))
    hfsq = z.copy_(f).mul_(0.5).mul_(f)
    big_r.add_(hfsq).mul_(s).add_(s.copy_(k).mul_(_LN2_LO))
    # y = -2 ln u1 = 2 (((hfsq - (s (hfsq + R) + k ln2_lo)) - f) - k ln2_hi) >= 0
    y = hfsq.sub_(big_r).sub_(f).sub_(k.mul_(_LN2_HI)).mul_(2.0).clamp_min_(0.0)
    q = torch.bitwise_right_shift(y.view(i32), 1).neg_().add_(_RSQRT_GUESS).view(f32)
    half_y = f.copy_(y).mul_(0.5)
    for _ in range(3):  # Newton on 1/sqrt(y); (y/2 q) q first: y = 0 keeps q finite and gives r = 0
        q.mul_(big_r.copy_(half_y).mul_(q).mul_(q).neg_().add_(1.5))
    r = y.mul_(q)
    phi = t.mul_(_PHI)
    p2 = torch.mul(phi, phi)
    sin = torch.mul(p2, _SIN3).add_(_SIN2).mul_(p2).add_(_SIN1).mul_(p2).mul_(phi).add_(phi)
    cos = torch.mul(p2, _COS3).add_(_COS2).mul_(p2).add_(_COS1).mul_(p2).mul_(p2).sub_(p2.mul_(0.5)).add_(1.0)
    even = torch.sub(1.0, odd)  # x * 0 + y * 1 = y exactly
    first = torch.mul(sin, odd).add_(torch.mul(cos, even))
    second = sin.mul_(even).add_(cos.mul_(odd))
    # cos theta < 0 in quadrants 1 and 2, sin theta < 0 in 2 and 3: flip the sign bits (r >= 0)
    first.view(i32).bitwise_xor_(torch.add(quadrant, 1).bitwise_and_(2).bitwise_left_shift_(30))
    second.view(i32).bitwise_xor_(quadrant.bitwise_and_(2).bitwise_left_shift_(30))
    first.mul_(r)
    second.mul_(r)
    return torch.stack((first, second), dim=-1).reshape(first.shape[0], -1)


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
