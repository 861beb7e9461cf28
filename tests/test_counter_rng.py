"""The counter-based static draws (engine.counter_rng): every bit against an independent numpy
uint64 reference of the documented function, then statistics - uniformity, normality, and the
independence of streams, layers and neighbouring instances - with scipy's tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from engine import counter_rng as cr
from engine.hardware import HardwareSpec
from engine.instance import HardwareInstance, draw_layers
from engine.nonideal.faults import (
    HEALTHY,
    STUCK_GMAX,
    STUCK_GMIN,
    StuckAt,
    apply_fault_weights_,
    codes_from_weights,
    fault_codes,
    fault_weights,
    thresholds,
)
from sweep.plan import instance_seed

U64 = np.uint64


def ref_mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser as published (Steele et al. 2014), uint64 arithmetic."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def ref_key(seed: int, layer: int, stream: int) -> np.uint64:
    g = 0x9E3779B97F4A7C15
    with np.errstate(over="ignore"):
        k = ref_mix64(np.array([seed], dtype=U64))[0] + U64(g * (layer + 1) % 2**64)
        k = ref_mix64(np.array([k], dtype=U64))[0] + U64(g * (stream + 1) % 2**64)
        return ref_mix64(np.array([k], dtype=U64))[0]


def ref_uint32(seed: int, layer: int, stream: int, n: int) -> np.ndarray:
    m = (n + 1) // 2
    with np.errstate(over="ignore"):
        ctr = np.arange(1, m + 1, dtype=U64) * U64(0x9E3779B97F4A7C15)
        w = ref_mix64(ref_key(seed, layer, stream) + ctr)
    return np.stack([w & U64(0xFFFFFFFF), w >> U64(32)], -1).reshape(-1)[:n].astype(np.int64)


def test_mix64_matches_the_uint64_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2**64, 10_000, dtype=U64, endpoint=False)
    z[:4] = [0, 1, 2**63, 2**64 - 1]
    ours = cr.mix64_(torch.from_numpy(z.view(np.int64).copy())).numpy().view(U64)
    assert np.array_equal(ours, ref_mix64(z))
    # SplitMix64 seeded with 0: its first outputs are mix64(GAMMA), mix64(2 GAMMA) (published values)
    first = cr.words(torch.tensor([0]), 2).numpy().view(U64)[0]
    assert [hex(int(v)) for v in first] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4"]


@pytest.mark.parametrize("seed, layer, stream", [(0, 0, 0), (1, 0, 0), (2**63 - 1, 7, 4), (123456789, 3, 1)])
def test_uint32_stream_matches_the_reference_bit_for_bit(seed, layer, stream):
    key = cr.stream_keys([seed], layer, stream)
    assert int(key[0]) % 2**64 == int(ref_key(seed, layer, stream)) == cr.stream_key_int(seed, layer, stream)
    for n in (1, 2, 7, 10_001):
        assert np.array_equal(cr.uint32(key, n)[0].numpy(), ref_uint32(seed, layer, stream, n))


def ref_normals(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Box-Muller pairs of 32-bit halves (lo, hi as int64 in [0, 2**32)), written from the published
    recipes in numpy float32, one correctly rounded operation at a time: FreeBSD's ``logf``
    (e_logf.c), Cephes' ``sinf``/``cosf`` polynomials, Newton's 1/sqrt. (r cos, r sin) per pair."""
    f32, i32 = np.float32, np.int32

    def c(bits: int) -> np.float32:
        return np.array([bits], dtype=np.uint32).view(f32)[0]

    x = (2 * (hi >> 2) + 1).astype(f32)  # u1 = x / 2**31
    ix = x.view(i32) + i32(0x3F800000 - 0x3F3504F3)
    k = ((ix >> 23) - (127 + 31)).astype(f32)
    f = ((ix & 0x7FFFFF) + 0x3F3504F3).astype(i32).view(f32) - f32(1)
    s = f / (f + f32(2))
    z = s * s
    w = z * z
    big_r = (w * c(0x3E789E26) + c(0x3ECCCE13)) * w + (w * c(0x3E91E9EE) + c(0x3F2AAAAA)) * z
    hfsq = f * f32(0.5) * f
    y = ((hfsq - ((big_r + hfsq) * s + k * c(0x3717F7D1))) - f - k * c(0x3F317180)) * f32(2)  # -2 ln u1
    y = np.maximum(y, f32(0))
    q = (i32(0x5F3759DF) - (y.view(i32) >> 1)).astype(i32).view(f32)
    for _ in range(3):
        q = (f32(1.5) - (y * f32(0.5)) * q * q) * q
    r = y * q
    s32 = lo.astype(np.uint32).view(i32)
    quadrant = ((s32 >> 29) + 1) >> 1
    phi = (((s32 & (2**30 - 1)) ^ 2**29) - 2**29).astype(f32) * c(0x30C90FDB)
    p2 = phi * phi
    sin = ((p2 * c(0xB94CA1F9) + c(0x3C08839E)) * p2 + c(0xBE2AAAA3)) * p2 * phi + phi
    cos = ((p2 * c(0x37CCF5CE) + c(0xBAB6061A)) * p2 + c(0x3D2AAAA5)) * p2 * p2 - p2 * f32(0.5) + f32(1)
    odd = quadrant & 1 == 1
    first, second = np.where(odd, sin, cos) * r, np.where(odd, cos, sin) * r
    first = np.where((quadrant + 1) & 2, -first, first)  # cos < 0 in quadrants 1, 2
    second = np.where(quadrant & 2, -second, second)  # sin < 0 in quadrants 2, 3
    return np.stack([first, second], -1).reshape(-1)


def test_uniforms_and_normals_are_the_documented_transforms():
    """Uniforms exactly (u32 >> 8) / 2**24; normals bit for bit the numpy float32 reference of the
    documented Box-Muller recipe, and within 1e-6 of its float64 evaluation (cos and sin in every
    quadrant, u1 at both ends). Breakage caught: a libm call (not correctly rounded: CPU, CUDA and
    compiled code differ in the last bit), an FMA-fused step, a wrong quadrant sign or swap."""
    key = cr.stream_keys([42], 2, 1)
    n = 200_001
    u32 = ref_uint32(42, 2, 1, n)
    assert np.array_equal(cr.uniform(key, n)[0].numpy(), (u32 >> 8).astype(np.float32) * np.float32(2.0**-24))
    m = (n + 1) // 2
    both = ref_uint32(42, 2, 1, 2 * m)
    lo, hi = both[0::2], both[1::2]
    ends = np.array([0, 3, 2**29, 2**30, 2**31, 3 * 2**29, 2**32 - 1, 2**32 - 4, 2**31 - 1, 5 * 2**29])
    lo, hi = np.concatenate([ends, ends[::-1], lo]), np.concatenate([ends, ends, hi])
    w = torch.from_numpy(((hi.astype(np.uint64) << U64(32)) | lo.astype(np.uint64)).view(np.int64))
    got = cr.box_muller(w.reshape(1, -1))[0].numpy()
    assert np.array_equal(got.view(np.int32), ref_normals(lo, hi).view(np.int32))
    assert np.array_equal(cr.normal(key, n)[0].numpy(), got[4 * len(ends) :][:n])  # after the 2 x 10 edge words
    u1 = (2 * (hi >> 2) + 1).astype(np.float32).astype(np.float64) / 2**31
    theta = 2 * np.pi * lo.astype(np.uint32).view(np.int32) / 2**32
    r = np.sqrt(-2 * np.log(u1))
    expect = np.stack([r * np.cos(theta), r * np.sin(theta)], -1).reshape(-1)
    assert np.abs(got - expect).max() < 1e-6 and np.abs(expect).max() > 6.5


def test_instances_do_not_depend_on_how_many_are_drawn_together():
    seeds = [5, 17, 2**40 + 3]
    together = cr.normal(cr.stream_keys(seeds, 1, 4), 5_000)
    alone = torch.cat([cr.normal(cr.stream_keys([s], 1, 4), 5_000) for s in reversed(seeds)]).flip(0)
    assert torch.equal(together, alone)
    u_together = cr.uint32(cr.stream_keys(seeds, 0, 0), 999)
    assert torch.equal(u_together[1], cr.uint32(cr.stream_keys([17], 0, 0), 999)[0])


def test_uniforms_pass_ks_and_chi_square():
    u = cr.uniform(cr.stream_keys([2019], 0, 0), 1_000_000)[0].double().numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    counts = np.bincount((u * 1024).astype(int), minlength=1024)
    assert stats.chisquare(counts).pvalue > 1e-3
    # the low bits too: the 8 bits below the float's 24 (uint32 & 0xFF) are uniform
    low = cr.uint32(cr.stream_keys([2019], 0, 0), 1_000_000)[0].numpy() & 0xFF
    assert stats.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-3


def test_normals_pass_ks_and_match_moments_and_tails():
    z = cr.normal(cr.stream_keys([7], 3, 1), 1_000_000)[0].double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / math.sqrt(len(z)) and abs(z.var() - 1) < 5 * math.sqrt(2 / len(z))
    # P(|z| > 3) = 0.0026998: binomial tolerance of 5 sigma
    p, n = 2 * stats.norm.sf(3), len(z)
    assert abs((np.abs(z) > 3).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    # the cos and the sin members of the pairs are each normal and uncorrelated with each other
    cos, sin = z[0::2], z[1::2]
    assert stats.kstest(cos, "norm").pvalue > 1e-3 and stats.kstest(sin, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(cos, sin)[0, 1]) < 5 / math.sqrt(len(cos))
    assert abs(np.corrcoef(cos**2, sin**2)[0, 1]) < 5 / math.sqrt(len(cos))  # independent, not only uncorrelated


def _independent(a: np.ndarray, b: np.ndarray) -> bool:
    """No linear correlation and a flat 16 x 16 joint histogram (chi-square test of independence)."""
    n = len(a)
    if abs(np.corrcoef(a, b)[0, 1]) >= 5 / math.sqrt(n):
        return False
    table = np.histogram2d(a, b, bins=16, range=[[0, 1], [0, 1]])[0]
    return stats.chi2_contingency(table).pvalue > 1e-3


def test_streams_layers_and_neighbouring_instances_are_independent():
    n = 200_000
    layout = 12345
    s0, s1 = instance_seed(2019, 0, layout), instance_seed(2019, 1, layout)

    def u(seed: int, layer: int, stream: int) -> np.ndarray:
        return cr.uniform(cr.stream_keys([seed], layer, stream), n)[0].double().numpy()

    base = u(s0, 0, 0)
    assert _independent(base, u(s1, 0, 0))  # neighbouring instance indices of a sweep
    assert _independent(u(0, 0, 0), u(1, 0, 0))  # even adjacent raw seeds
    assert _independent(base, u(s0, 1, 0))  # neighbouring layers
    assert _independent(base, u(s0, 0, 4))  # the fault and relative-variation streams of one cell
    assert _independent(base[:-1], base[1:])  # neighbouring cells
    assert not _independent(base, np.clip(base + 0.01 * u(s1, 0, 0), 0, 1 - 1e-12))  # the check has power


def test_fault_map_rates_are_exact_in_probability_and_coupled_across_rates():
    shape = (2, 1, 3, 4, 64, 64)
    counts = []
    for p_max, p_min in [(0.01, 0.05), (0.02, 0.05), (0.02, 0.1)]:
        hw = HardwareSpec.model_validate({"faults": {"stuck_at_gmax_rate": p_max, "stuck_at_gmin_rate": p_min}})
        codes = draw_layers([11], [(2, shape)], hw, torch.device("cpu"))[0].faults[0]
        n = codes.numel()
        for code, p in ((STUCK_GMAX, p_max), (STUCK_GMIN, p_min)):
            assert abs((codes == code).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
        counts.append(codes)
    a, b, c = counts
    assert bool(((a == STUCK_GMAX) <= (b == STUCK_GMAX)).all())  # G_max set grows with its rate
    assert bool(((b != HEALTHY) <= (c != HEALTHY)).all())  # the stuck set grows with either rate


@pytest.mark.parametrize("p_max,p_min", [(0.0, 0.0), (0.0175, 0.0904), (0.0, 1.0), (1.0, 0.0), (0.3, 0.7), (1e-9, 0.0)])
def test_fault_weights_are_the_threshold_masks_and_programming_overwrites_exactly(p_max, p_min):
    """The float 0/1 weights programming multiplies by are the integer-threshold masks of the unsigned
    draws (rates 0 and 1 and the int32 sign boundary included), the codes follow them, and
    h * healthy + top * at_gmax equals overwriting the stuck cells."""
    spec = HardwareSpec.model_validate({"faults": {"stuck_at_gmax_rate": p_max, "stuck_at_gmin_rate": p_min}}).faults
    keys = cr.stream_keys([5, 6], 0, StuckAt.streams[0].index)
    bits = cr.bits32(keys, 20_000)
    bits[0, :4] = torch.tensor([0, -1, -(2**31), 2**31 - 1], dtype=torch.int32)  # u = 0, 2**32-1, 2**31, 2**31-1
    u = bits.to(torch.int64) & 0xFFFFFFFF  # the unsigned draws, compared in int64 (the reference)
    t_max, t_all = thresholds(spec)
    stuck, gmax = u < t_all, u < t_max
    healthy, at_gmax = fault_weights(bits, spec)
    assert torch.equal(healthy, (~stuck).float()) and torch.equal(at_gmax, gmax.float())
    assert torch.equal(fault_weights(u, spec)[0], healthy)  # int64 draws give the same map
    codes = torch.where(gmax, STUCK_GMAX, torch.where(stuck, STUCK_GMIN, HEALTHY)).to(torch.int8)
    assert torch.equal(codes_from_weights(healthy, at_gmax), codes) and torch.equal(fault_codes(bits, spec), codes)
    h = torch.rand(bits.shape) * 255
    assert torch.equal(
        apply_fault_weights_(h.clone(), healthy, at_gmax, 255), h.masked_fill(stuck, 0).masked_fill(gmax, 255)
    )


def test_instance_draws_once_per_layer_and_reuses_programmed_cells():
    hw = HardwareSpec.model_validate({"faults": {"stuck_at_gmax_rate": 0.01}, "variation": {"sigma_rel": 0.1}})
    inst = HardwareInstance([3], hw)
    levels = torch.randint(0, 128, (2, 1, 2, 1, 64, 64))
    a = inst.cells(levels, 0)
    b = inst.cells(levels.clone(), 0)  # equal by value: the same programmed cells
    other = inst.cells(levels.flip(-1), 0)  # other targets on the same physical draws
    assert a.h is b.h and other.h is not a.h and inst.stats == {"draws": 1, "programs": 2, "solves": 0}
    assert a.instance is b.instance is other.instance is inst
    assert torch.equal(a.faults, other.faults)


def test_a_static_effect_is_one_object_the_engine_draws_and_applies(monkeypatch):
    """The non-ideality protocol (issue 16): an effect declares its stream and one programming step; the
    engine hashes the stream and applies the effects in STATIC_EFFECTS order, naming none of them. A
    gain error added here (no engine edit) gets the counter normals of its own stream, multiplies the
    variation's result by (1 + s z) on healthy cells, leaves stuck cells stuck and every other draw as it was."""
    from engine import instance as instance_module
    from engine.instance import program_levels
    from engine.nonideal import STATIC_EFFECTS, StaticEffect, Stream

    class Gain(StaticEffect):
        name = "gain"
        streams = (Stream("z_gain", 6, "normal"),)

        def used(self, hw):
            return self.streams

        def program(self, g, target, draws, hw):
            return g.mul_(1 + 0.1 * draws["z_gain"])

    cpu = torch.device("cpu")
    hw = HardwareSpec.model_validate({"faults": {"stuck_at_gmax_rate": 0.05}, "variation": {"sigma_rel": 0.1}})
    shape = (2, 1, 2, 1, 8, 8)
    levels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0)).float()
    before = draw_layers([7], [(3, shape)], hw, cpu)[0]
    base = program_levels(levels, before, hw, 1)
    monkeypatch.setattr(instance_module, "STATIC_EFFECTS", (STATIC_EFFECTS[0], Gain(), *STATIC_EFFECTS[1:]))
    after = draw_layers([7], [(3, shape)], hw, cpu)[0]
    z = cr.normal(cr.stream_keys([7], 3, 6), math.prod(shape)).reshape(1, *shape)
    assert torch.equal(after.get("z_gain"), z)
    assert set(after.values) == set(before.values) | {"z_gain"}
    assert all(torch.equal(after.get(k), v) for k, v in before.values.items())
    got = program_levels(levels, after, hw, 1)
    g_min = hw.device.g_min_s / hw.device.delta_g_s
    healthy = before.get("healthy").bool()
    torch.testing.assert_close(got[healthy] + g_min, (base[healthy] + g_min) * (1 + 0.1 * z[healthy]))
    assert torch.equal(got[~healthy], base[~healthy]) and (~healthy).any()
