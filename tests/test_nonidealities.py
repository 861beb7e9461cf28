"""Static draws (stuck-at faults, programming variation) and per-read noise against the papers'
closed forms (PytorX eq. 1-3), each within Monte Carlo tolerance."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import constants, stats
from torch import nn

from engine import HardwareSpec, convert
from engine.nonideal.faults import STUCK_GMAX, STUCK_GMIN
from engine.nonideal.thermal_shot import cell_current_rms


def _layer(hw: dict, k: int = 200, n: int = 60, seeds=(0,), x=None):
    torch.manual_seed(0)
    lin = nn.Linear(k, n)
    xm = convert(nn.Sequential(lin), HardwareSpec.model_validate(hw))
    xm.calibrate([x if x is not None else torch.rand(64, k)])
    layer = xm.crossbar_layers()[0]
    layer.program(list(seeds))
    return xm, layer


@pytest.mark.parametrize("p_max, p_min", [(0.0175, 0.0904), (0.2, 0.05), (0.0, 0.3)])
def test_stuck_at_rates_within_4_sigma_and_stuck_cells_read_exactly(p_max, p_min):
    _, layer = _layer(
        {"faults": {"stuck_at_gmax_rate": p_max, "stuck_at_gmin_rate": p_min}, "variation": {"sigma_rel": 0.2}},
        seeds=(11, 12),
    )
    cells = layer.cells
    n = cells.faults.numel()
    for code, p in ((STUCK_GMAX, p_max), (STUCK_GMIN, p_min)):
        rate = float((cells.faults == code).double().mean())
        assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (code, rate, p)
    full = layer.hw.device.levels - 1
    assert bool((cells.h[cells.faults == STUCK_GMAX] == full).all())  # exactly G_max
    assert bool((cells.h[cells.faults == STUCK_GMIN] == 0).all())  # exactly G_min
    healthy = cells.faults == 0
    target = layer.target_levels().float().expand_as(cells.h)
    assert not torch.equal(cells.h[healthy], target[healthy])  # variation applies to healthy cells only


def test_fault_sets_are_nested_across_rates_for_one_instance():
    """Coupled draws: the same seed's stuck set only grows with the rate (sweep monotonicity)."""
    previous = None
    for p in (0.0, 0.005, 0.01, 0.0175, 0.05):
        _, layer = _layer({"faults": {"stuck_at_gmax_rate": p, "stuck_at_gmin_rate": 0.02}}, seeds=(5,))
        stuck = layer.cells.faults == STUCK_GMAX
        if previous is not None:
            assert bool((stuck | ~previous).all())  # previous subset of stuck
        previous = stuck


def test_relative_variation_has_requested_sigma_over_mu():
    for dist in ("gaussian", "lognormal"):
        _, layer = _layer({"variation": {"sigma_rel": 0.1, "distribution": dist}}, k=256, n=64, seeds=(3,))
        g_min_n = layer.hw.device.g_min_s / layer.hw.device.delta_g_s
        g = layer.cells.h[0] + g_min_n
        g0 = layer.target_levels().float() + g_min_n
        ratio = g / g0
        n = ratio.numel()
        assert abs(float(ratio.mean()) - 1) < 4 * 0.1 / math.sqrt(n)
        assert abs(float(ratio.std()) - 0.1) < 4 * 0.1 / math.sqrt(2 * n) * 1.5


def _single_cell(hw_extra: dict, reads: int, seeds=(7,)):
    """A 1 x 1 layer, w > 0: one programmed cell in G+ and one cell at G_min in G-."""
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    hw = HardwareSpec.model_validate({"adc": {"kind": "ideal"}, **hw_extra})
    xm = convert(nn.Sequential(lin), hw)
    xm.calibrate([torch.ones(4, 1)])
    layer = xm.crossbar_layers()[0]
    xm.program(list(seeds))
    xm.reset_read_noise()
    with torch.no_grad():
        y = xm(torch.ones(reads, 1))[..., 0]  # (instances, reads)
    dev = hw.device
    g_plus = dev.g_min_s + float(layer.target_levels()[0].max()) * dev.delta_g_s
    v = hw.input.v_read_v  # input 1.0 -> the top code -> v_read across the cell
    to_current = dev.delta_g_s * layer.delta_v_v / (float(layer.delta_x) * layer.mapped.delta_w)
    return y.double() * to_current, g_plus, dev.g_min_s, v, layer  # output in amperes


@pytest.mark.parametrize("f, t", [(1e9, 300.0), (1e8, 350.0)])
def test_thermal_shot_noise_matches_pytorx_eq1(f, t):
    current, g_plus, g_minus, v, _ = _single_cell(
        {"read_noise": {"enabled": True}, "frequency_hz": f, "temperature_k": t}, 40000
    )
    expect = math.sqrt(cell_current_rms(g_plus, v, f, t) ** 2 + cell_current_rms(g_minus, v, f, t) ** 2)
    assert abs(float(current.mean()) - (g_plus - g_minus) * v) < 4 * expect / math.sqrt(current.numel())
    rel_se = 1 / math.sqrt(2 * current.numel())
    assert abs(float(current.std()) / expect - 1) < 4 * rel_se
    # independent closed form of eq. 1
    assert cell_current_rms(g_plus, v, f, t) == pytest.approx(
        math.sqrt(g_plus * f * (4 * constants.k * t + 2 * constants.e * v))
    )


def test_read_noise_and_programming_variation_match_pytorx_eq2():
    """eq. 2: g_rms^2 = i_rms^2 / V^2 + (dG/3)^2 per cell, the first term per read (eq. 1) and the second,
    here, static per instance (variation.sigma_abs_delta_g; the read-to-read reading is
    hardware.read_fluctuation, tests/test_fidelity.py). Separated: the spread of reads within an
    instance is eq. 1 alone; the spread of instance means is (dG/3) sqrt(2) V. Catches: the static term
    redrawn per read (the within-instance spread would include it) or eq. 1 drawn once per instance."""
    f, t = 1e9, 300.0
    seeds = list(range(2000))
    reads = 8
    current, g_plus, g_minus, v, layer = _single_cell(
        {
            "read_noise": {"enabled": True},
            "frequency_hz": f,
            "temperature_k": t,
            "variation": {"sigma_abs_delta_g": 1 / 3},
            # G_min well above dG/3 so the documented floor at 0 S never truncates the draw
            "device": {"g_min_s": 50e-6, "g_max_s": 383e-6},
        },
        reads,
        seeds=seeds,
    )
    g_equiv = current / v  # (instances, reads)
    dg = layer.hw.device.delta_g_s
    eq1 = sum(c * f * (4 * constants.k * t + 2 * constants.e * v) / v**2 for c in (g_plus, g_minus))
    within = float(g_equiv.var(1).mean())  # unbiased per instance, averaged
    assert within == pytest.approx(eq1, rel=4 * math.sqrt(2 / (len(seeds) * (reads - 1))))
    static = 2 * (dg / 3) ** 2  # G+ and G- each varied once per instance
    between = float(g_equiv.mean(1).var())  # = static + eq1 / reads
    assert between == pytest.approx(static + eq1 / reads, rel=4 * math.sqrt(2 / len(seeds)))
    assert static > 5 * eq1 / reads  # the static term dominates the spread of instance means


def test_telegraph_noise_occupancy_and_amplitude_match_pytorx_eq3():
    """Exact sampling: each cell reads G or G + G_rtn, G_rtn/G = (bG + a)/(G - (bG + a)), w.p. 0.5."""
    current, g_plus, g_minus, v, layer = _single_cell({"rtn": {"enabled": True, "sampling": "exact"}}, 20000)
    a, b = 1.662e-7, 0.0015
    jump = lambda g: g * (b * g + a) / (g - (b * g + a))  # noqa: E731
    base = (g_plus - g_minus) * v
    levels = {(i, j): base + (i * jump(g_plus) - j * jump(g_minus)) * v for i in (0, 1) for j in (0, 1)}
    c = current[0]
    counts = {}
    for key, value in levels.items():
        counts[key] = int((torch.abs(c - value) <= 1e-6 * abs(value) + 1e-12).sum())
    assert sum(counts.values()) == c.numel()  # every read is one of the four eq.-3 states
    n = c.numel()
    for key, cnt in counts.items():  # independent Bernoulli(0.5) per cell: 1/4 each
        assert abs(cnt / n - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n), (key, cnt)
    assert jump(layer.hw.device.g_min_s) / layer.hw.device.g_min_s > 1  # a G_min cell more than doubles


def test_gaussian_telegraph_sampling_matches_exact_moments():
    x = torch.rand(1, 64).repeat(4000, 1)
    moments = {}
    for sampling in ("exact", "gaussian"):
        xm, layer = _layer(
            {
                "rtn": {"enabled": True, "sampling": sampling, "occupancy": 0.3},
                "adc": {"kind": "ideal"},
                "crossbar": {"rows": 64, "cols": 64},
            },
            k=64,
            n=4,
            seeds=(9,),
            x=x,
        )
        with torch.no_grad():
            y = xm(x)[0].double()
        moments[sampling] = (y.mean(0), y.std(0), y)
    (m_e, s_e, y_e), (m_g, s_g, y_g) = moments["exact"], moments["gaussian"]
    assert torch.allclose(m_e, m_g, atol=float(4 * s_e.max() / math.sqrt(4000) * 1.5))
    assert torch.allclose(s_e, s_g, rtol=0.08)
    # the shape, not only two moments: each column's gaussian draws standardised by the exact-sampling
    # moments are N(0, 1) (KS), and the exact Bernoulli sums over 64 rows are close to that normal
    # (two-sample KS). Catches e.g. uniform draws with the right mean and std.
    for col in range(y_g.shape[1]):
        z = ((y_g[:, col] - m_e[col]) / s_e[col]).numpy()
        assert stats.kstest(z, "norm").pvalue > 1e-4, col
        assert stats.ks_2samp(y_g[:, col].numpy(), y_e[:, col].numpy()).pvalue > 1e-4, col


def test_column_awgn_has_requested_sigma_per_sensed_column():
    _, layer = _layer({"column_awgn": {"sigma_lsb": 2.0}, "adc": {"kind": "ideal"}}, k=10, n=1, seeds=(4,))
    x = torch.rand(1, 10).repeat(20000, 1)
    with torch.no_grad():
        y = layer(x)[:, 0].double() / (float(layer.delta_x) * layer.mapped.delta_w)  # MAC units
    # one sensed column pair (analog subtraction, one slice): sigma = 2 LSB
    assert abs(float(y.std()) / 2.0 - 1) < 4 / math.sqrt(2 * y.numel())


def test_a_read_effect_is_one_object_the_read_adds(monkeypatch):
    """The non-ideality protocol's read phase (issue 16): an effect builds its operands at programming
    and adds its current to every read; the layer names no effect. A read-proportional gain error added
    here (no engine edit) adds eps (v @ G_phys) to each raw bit-line current, so with analog subtraction
    (G_min cancels) and an ideal ADC the layer's output is (1 + eps) times the noise-free one; the
    effect is off until the hardware uses it (then the read is the plain folded read)."""
    from engine import programming as programming_module
    from engine.nonideal import READ_EFFECTS, ReadEffect

    class Gain(ReadEffect):
        name = "gain"
        on = True

        def used(self, hw):
            return self.on

        def operands(self, ctx):
            return {"g": ctx.op.operand(ctx.g_phys)}

        def add_noise(self, current, v, ops, ctx):
            return current + 0.01 * ctx.op.apply(v, ops["g"])

    torch.manual_seed(0)
    lin = nn.Linear(100, 7)
    hw = HardwareSpec.model_validate({"crossbar": {"rows": 32, "cols": 32}, "adc": {"kind": "ideal"}})
    xm = convert(nn.Sequential(lin), hw)
    x = torch.rand(16, 100)
    xm.calibrate([x])
    xm.program([0])
    with torch.no_grad():
        plain = xm(x)[0] - lin.bias
        gain = Gain()
        monkeypatch.setattr(programming_module, "READ_EFFECTS", (*READ_EFFECTS, gain))
        monkeypatch.setattr(HardwareSpec, "any_read_noise", property(lambda hw: gain.used(hw)))
        xm.program([0])
        layer = xm.crossbar_layers()[0]
        assert [e for e, _ in layer._prog.read_effects] == [gain]
        torch.testing.assert_close(xm(x)[0] - lin.bias, 1.01 * plain, rtol=1e-5, atol=1e-6)
        gain.on = False
        xm.program([0])
        assert layer._prog.read_effects == () and torch.equal(xm(x)[0] - lin.bias, plain)
