"""Accuracy over time (issue 14, first part): conductance drift and accumulated 1/f read noise at
hardware.time_s (aihwkit's PCM model), and drift compensation, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from test_nonidealities import _single_cell  # a 1 x 1 layer read many times, output in amperes
from torch import nn

from engine import HardwareSpec, convert, evaluate
from engine.data import loader
from engine.hardware import DriftSpec
from engine.mitigations import parse_strategy
from engine.nonideal.drift import drift_exponents


def _layer(hw: dict, seeds=(3,), k=256, n=64):
    torch.manual_seed(0)
    xm = convert(nn.Sequential(nn.Linear(k, n, bias=False)), HardwareSpec.model_validate(hw))
    xm.calibrate([torch.rand(32, k)])
    xm.program(list(seeds))
    return xm, xm.crossbar_layers()[0]


def test_power_law_drift_with_a_fixed_exponent_is_exact():
    """nu fixed, no noise: G(t) / G_prog = (t / t0)^(-nu) exactly, for every cell (G_min cells too),
    with t = time_s + t0. Catches t measured from 0 instead of t0, or nu applied to G - G_min."""
    for time_s in (1e-6, 3600.0, 3.15e7):
        hw = {"time_s": time_s, "drift": {"model": "power_law", "nu_mean": 0.07}}
        _, layer = _layer(hw)
        dev = layer.hw.device
        g_min_n = dev.g_min_s / dev.delta_g_s
        ratio = (layer.cells.h[0].double() + g_min_n) / (layer.target_levels().double() + g_min_n)
        expect = ((time_s + 20.0) / 20.0) ** -0.07
        assert torch.allclose(ratio, torch.full_like(ratio, expect), rtol=1e-5)


def test_pcm_drift_exponents_have_aihwkits_level_dependent_mean_and_std():
    """nu = |mu + sigma z| with mu, sigma clamped linear functions of ln(G/G_max): the mean and std of
    the folded normal, per level, within Monte Carlo tolerance; the exponents a layer's G_min cells
    carry (recovered from G(t) / G_prog) match the same closed form."""
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spec = DriftSpec(model="pcm")
    for g_rel in (1e-3, 0.05, 0.3, 1.0):
        mu = min(max(-0.0155 * math.log(g_rel) + 0.0244, 0.049), 0.1)
        sd = min(max(-0.0125 * math.log(g_rel) - 0.0059, 0.008), 0.045)
        folded = stats.foldnorm(mu / sd, scale=sd)
        nu = drift_exponents(torch.full_like(z, g_rel), z, spec)
        assert float(nu.mean()) == pytest.approx(folded.mean(), abs=4 * folded.std() / math.sqrt(z.numel()))
        assert float(nu.std()) == pytest.approx(folded.std(), rel=0.01)
    time_s = 86400.0
    _, layer = _layer({"time_s": time_s, "drift": {"model": "pcm"}}, seeds=(5,))
    dev = layer.hw.device
    g_min_n = dev.g_min_s / dev.delta_g_s
    target = layer.target_levels().expand_as(layer.cells.h)
    at_gmin = target == 0
    nu = -torch.log((layer.cells.h.double()[at_gmin] + g_min_n) / g_min_n) / math.log((time_s + 20) / 20)
    folded = stats.foldnorm(0.1 / 0.045, scale=0.045)  # G_min / G_max = 1e-3: both clamps active
    assert float(nu.mean()) == pytest.approx(folded.mean(), abs=4 * folded.std() / math.sqrt(nu.numel()))
    assert float(nu.std()) == pytest.approx(folded.std(), rel=4 / math.sqrt(2 * nu.numel()))


def test_the_same_instance_drifts_monotonically_on_the_same_draws():
    """Paired over time: one instance keeps its stuck cells and exponents at every t, so every cell's
    conductance only falls with t (never redrawn)."""
    prev = None
    for time_s in (1.0, 60.0, 3600.0, 86400.0, 3.15e7):
        _, layer = _layer(
            {
                "time_s": time_s,
                "drift": {"model": "pcm"},
                "variation": {"sigma_rel": 0.1},
                "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.02},
            },
            seeds=(8,),
        )
        h = layer.cells.h.clone()
        if prev is not None:
            assert torch.equal(layer.cells.faults, prev[1])
            assert bool((h <= prev[0] + 1e-6).all()) and bool((h < prev[0] - 1e-6).any())
        prev = (h, layer.cells.faults.clone())


@pytest.mark.parametrize("time_s", [1e2, 1e5, 3.15e7])
def test_1f_read_noise_std_matches_aihwkit_at_each_time(time_s):
    """One programmed cell (G+) and one at G_min (G-), read 20,000 times: the current's std is
    V sqrt(sum_c (G_c sigma_1f(G_c))^2), sigma_1f = Q_s sqrt(ln((t + t_read)/(2 t_read))), t = time_s + t0.
    Catches sigma_1f not growing with t, Q_s of the wrong level, or the noise drawn once per instance."""
    current, g_plus, g_minus, v, layer = _single_cell({"time_s": time_s, "drift": {"read_noise_1f": True}}, 20000)
    g_max, t, t_read = layer.hw.device.g_max_s, time_s + 20.0, 250e-9

    def sig(g: float) -> float:  # aihwkit: Q_s = min(0.0088 / max(g_T^0.65, 1e-3), 0.2)
        return min(0.0088 / max((g / g_max) ** 0.65, 1e-3), 0.2) * math.sqrt(math.log((t + t_read) / (2 * t_read)))

    expect = v * math.sqrt((g_plus * sig(g_plus)) ** 2 + (g_minus * sig(g_minus)) ** 2)
    assert float(current[0].std()) == pytest.approx(expect, rel=4 / math.sqrt(2 * 20000))


def test_global_drift_compensation_undoes_a_uniform_drift_exactly_and_reduces_a_varying_one():
    """With one exponent for every cell (power_law, nu_std 0), no faults or variation and an ideal ADC,
    the drifted layer is the freshly programmed one times (t/t0)^(-nu); aihwkit's global compensation
    (readout ratio of an all-ones input) restores those outputs. With PCM's level-dependent exponents it
    cannot be exact, but leaves a smaller error than no compensation. Catches a gain applied twice,
    to the bias, or not at all."""
    x = torch.rand(16, 256)
    xm, _ = _layer({"adc": {"kind": "ideal"}})  # read right after programming: no time, no drift
    with torch.no_grad():
        fresh = xm(x)
    for drift, exact in (({"model": "power_law", "nu_mean": 0.06}, True), ({"model": "pcm"}, False)):
        xm, _ = _layer({"adc": {"kind": "ideal"}, "time_s": 3.15e7, "drift": drift})
        with torch.no_grad():
            drifted = xm(x)
        err_none = float((drifted - fresh).norm())
        assert err_none > 1e-2 * float(fresh.norm())
        for scope in ("layer", "column"):
            xm.reset_mitigations()
            xm.program([3])
            parse_strategy({"name": "drift_comp", "scope": scope}).after_program(xm, None)
            with torch.no_grad():
                compensated = xm(x)
            if exact:
                assert torch.allclose(compensated, fresh, rtol=1e-4, atol=1e-5), scope
            else:
                assert float((compensated - fresh).norm()) < 0.5 * err_none, scope


def test_point_ids_of_specs_without_time_are_unchanged():
    """time_s, drift, read_fluctuation, iv, variation.sigma_poly_us/poly_g_max_ref_us and data.download at their
    defaults are not hashed: a spec that
    does not use them keeps the point ids it had before they existed; setting one changes the id."""
    from sweep.plan import result_content
    from sweep.spec import validate

    raw = {"name": "ids", "model": {"name": "lenet5", "train": {}}, "trials": 1, "output": {"dir": "x"}}
    content = result_content(validate(raw))
    assert "time_s" not in content["hardware"] and "drift" not in content["hardware"]
    assert "read_fluctuation" not in content["hardware"] and "download" not in content["data"]
    assert "iv" not in content["hardware"]  # the non-linear I-V section and the polynomial sigma came later
    assert set(content["hardware"]["variation"]) == {
        "sigma_abs_s",
        "sigma_abs_delta_g",
        "sigma_rel",
        "distribution",
        "domain",
        "ceiling",
    }
    poly = result_content(validate({**raw, "hardware": {"variation": {"sigma_poly_us": [0.3]}}}))
    assert poly["hardware"]["variation"]["sigma_poly_us"] == [0.3]
    assert result_content(validate({**raw, "hardware": {"iv": {"model": "sinh"}}}))["hardware"]["iv"]["model"] == "sinh"
    timed = result_content(validate({**raw, "hardware": {"time_s": 60, "drift": {"model": "pcm"}}}))
    assert timed["hardware"]["time_s"] == 60 and timed["hardware"]["drift"]["model"] == "pcm"
    # update.write_granularity is hashed only where it acts (train trials with write noise), so rows
    # written under the earlier one-write-per-batch noise get new ids and nothing else does
    assert "write_granularity" not in content["hardware"]["update"]
    train = {**raw, "kind": "train", "model": {"name": "lenet5"}, "training": {"momentum": 0.0}}
    assert "write_granularity" not in result_content(validate(train))["hardware"]["update"]
    noisy = result_content(validate({**train, "hardware": {"update": {"write_noise": 5.0}}}))
    assert noisy["hardware"]["update"]["write_granularity"] == "example"


def test_drift_compensation_recovers_accuracy_after_a_year_on_the_same_instances(lenet, digits, calib_inputs):
    """PCM drift + 1/f noise one year after programming costs LeNet-5 over 10 points on digits; global
    and per-column compensation on the same three instances recover to within 3 points of t0."""
    test = loader(digits.test, 540)
    seeds = [0, 1, 2]

    def top1(time_s: float, strategy: str | dict | None) -> float:
        xm = convert(
            lenet, HardwareSpec.model_validate({"time_s": time_s, "drift": {"model": "pcm", "read_noise_1f": True}})
        )
        xm.calibrate(calib_inputs)
        xm.program(seeds)
        if strategy is not None:
            parse_strategy(strategy).after_program(xm, None)
        return sum(m.top1 for m in evaluate(xm, test, None, reprogram=False)) / len(seeds)

    fresh, year = top1(1.0, None), top1(3.15e7, None)
    assert year < fresh - 0.1
    for strategy in ("drift_comp", {"name": "drift_comp", "scope": "column"}):
        assert top1(3.15e7, strategy) > fresh - 0.03, strategy


def test_time_and_drift_fields_are_refused_where_they_cannot_act():
    for hw, needle in (
        ({"time_s": 3600}, "hardware.time_s: has no effect without hardware.drift.model"),
        ({"time_s": 0, "drift": {"model": "pcm"}}, "time_s"),
        ({"time_s": 1, "drift": {"model": "pcm", "t0_s": 0}}, "t0_s"),
        ({"drift": {"model": "pcm"}}, "hardware.drift: drift and 1/f noise act at hardware.time_s"),
        ({"time_s": 1, "drift": {"model": "pcm", "nu_mean": 0.1}}, "only for drift.model: power_law"),
        ({"time_s": 1, "drift": {"model": "reram_wan2022", "t0_s": 5}}, "hardware.drift.t0_s: only"),
        ({"time_s": 1, "drift": {"model": "pcm", "t_read_s": 1e-6}}, "hardware.drift.t_read_s: only"),
    ):
        with pytest.raises(ValueError, match=needle):
            HardwareSpec.model_validate(hw)


def test_reram_relaxation_follows_the_wan2022_fit_at_its_times_only():
    """Wan et al. (2022) via aihwkit: at t = 1 day, the deviation of the cells at one level from their
    target has std sigma_t(g_T) = sum_i c_i g_T^i uS x G_max / 40 uS (coefficients written here from
    the published fit, not read from the code) and mean 0; other times are refused."""
    coeff_1day = (0.701, 22.086, -50.773, 47.095, -16.458)
    hw = {"time_s": 86400.0, "drift": {"model": "reram_wan2022"}, "device": {"g_min_s": 2e-6, "g_max_s": 40e-6}}
    _, layer = _layer(hw, seeds=(4,), k=512, n=128)
    dev = layer.hw.device
    target = layer.target_levels().expand_as(layer.cells.h)
    dev_s = (layer.cells.h.double() - target.double()) * dev.delta_g_s
    g_rel = (dev.g_min_s + target.double() * dev.delta_g_s) / dev.g_max_s
    expect = sum(c * g_rel**i for i, c in enumerate(coeff_1day)) * 1e-6  # per cell, siemens
    above = target >= 20  # well above 0 S, so the floor at 0 S never truncates the draw
    z = (dev_s / expect)[above]
    assert z.numel() > 10_000
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    assert float(z.std()) == pytest.approx(1.0, rel=4 / math.sqrt(2 * z.numel()))
    high = target >= 100  # the top of the range, where the polynomial bends (sigma ~ 2.6 uS at g_T = 1)
    assert float((dev_s / expect)[high].std()) == pytest.approx(1.0, rel=0.15)
    with pytest.raises(ValueError, match="reram_wan2022 is fitted at"):
        HardwareSpec.model_validate({**hw, "time_s": 3600.0})
    with pytest.raises(ValueError, match="no separate read-noise data"):
        HardwareSpec.model_validate({**hw, "drift": {"model": "reram_wan2022", "read_noise_1f": True}})


def test_device_presets_fill_published_values_under_explicit_ones(tmp_path, capsys):
    """Each preset carries its source's numbers (written here from the papers / aihwkit, not read from
    the code); explicit fields win; an unknown name is refused naming the field; `validate` prints the
    resolved hardware."""
    import yaml

    from sweep.cli import main

    pcm = HardwareSpec.model_validate({"device": {"preset": "pcm_ibm", "bits_per_cell": 5}, "time_s": 60})
    assert (pcm.device.g_min_s, pcm.device.g_max_s, pcm.device.bits_per_cell) == (0.0, 25e-6, 5)
    assert pcm.drift.model == "pcm" and pcm.drift.read_noise_1f and pcm.drift.t0_s == 20.0
    assert pcm.variation.sigma_poly_us == [0.26348, 1.9650, -1.1731] and pcm.variation.poly_g_max_ref_us == 25.0
    own = HardwareSpec.model_validate(
        {"device": {"preset": "pcm_ibm"}, "variation": {"sigma_abs_s": 1e-6}, "time_s": 1}
    )
    assert own.variation.sigma_abs_s == 1e-6 and own.variation.sigma_poly_us == []  # an explicit sigma wins
    txsim = HardwareSpec.model_validate({"device": {"preset": "txsim", "g_max_s": 2e-5}})
    assert (txsim.device.g_min_s, txsim.device.g_max_s) == (1e-6, 2e-5)  # R_min 100 kOhm, explicit G_max wins
    assert (txsim.ir_drop.r_row_ohm, txsim.ir_drop.r_col_ohm) == (1.0, 4.6)
    reram = HardwareSpec.model_validate({"device": {"preset": "reram_wan2022"}, "time_s": 1.0})
    assert reram.device.g_max_s == 40e-6 and reram.drift.model == "reram_wan2022"
    assert HardwareSpec.model_validate({"device": {"preset": "pytorx_table1"}}) == HardwareSpec()
    with pytest.raises(ValueError, match="hardware.device.preset must be one of"):
        HardwareSpec.model_validate({"device": {"preset": "pcm_samsung"}})
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "model": {"name": "lenet5", "train": {}},
                "trials": 1,
                "hardware": {"device": {"preset": "pcm_ibm"}, "time_s": 3600},
                "output": {"dir": str(tmp_path / "o")},
            }
        )
    )
    assert main(["validate", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "hardware (preset pcm_ibm): device.g_min_s=0.0, device.g_max_s=2.5e-05" in out and "drift.model='pcm'" in out


@pytest.mark.parametrize("g_max_us", [25.0, 50.0])
def test_pcm_programming_noise_follows_aihwkits_polynomial(g_max_us):
    """aihwkit PCMLikeNoiseModel.apply_programming_noise_to_conductance: G = G_T + sigma z with sigma =
    (0.26348 + 1.9650 g_T - 1.1731 g_T^2) uS x G_max / 25 uS (written here from aihwkit's source).
    Measured std at three targets through a programmed layer. Catches: the polynomial in the wrong
    variable (G instead of G/G_max), a missing G_max scaling, or sigma taken after another term."""
    from engine.nonideal.variation import apply_variation

    hw = HardwareSpec.model_validate({"device": {"preset": "pcm_ibm", "g_max_s": g_max_us * 1e-6}, "time_s": 1.0})
    dev = hw.device
    g_max_n = dev.g_max_s / dev.delta_g_s
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(5))
    for g_t in (0.3, 0.6, 1.0):
        target = torch.full_like(z, g_t * g_max_n)
        g = apply_variation(target, z, None, hw.variation, dev.delta_g_s, g_max_n) * dev.delta_g_s  # siemens
        sigma = (0.26348 + 1.9650 * g_t - 1.1731 * g_t**2) * 1e-6 * g_max_us / 25.0
        assert float(g.std()) == pytest.approx(sigma, rel=0.01)
        assert abs(float(g.mean()) - g_t * dev.g_max_s) < 4 * sigma / math.sqrt(z.numel())
    # through the instance draws: a layer's cells at the top level spread by sigma(1)
    xm, layer = _layer(
        {
            "device": {"preset": "pcm_ibm", "g_max_s": g_max_us * 1e-6},
            "time_s": 1e-9,
            "drift": {"model": "power_law", "nu_mean": 0.0, "read_noise_1f": False},
        },
        seeds=tuple(range(40)),
    )
    top = layer.target_levels() == dev.levels - 1
    spread = (layer.cells.h[:, top].double() * dev.delta_g_s).std()
    assert float(spread) == pytest.approx((0.26348 + 1.9650 - 1.1731) * 1e-6 * g_max_us / 25.0, rel=0.05)
