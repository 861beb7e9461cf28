"""Fidelity (issue 13): the papers' models as named choices, each against its closed form, and no
hardware field that a trial kind silently ignores."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from test_nonidealities import _single_cell  # a 1 x 1 layer read many times, output in amperes
from torch import nn

from engine import HardwareSpec, convert, evaluate
from engine.hardware import ProgrammingVariation, unused_fields
from engine.nonideal.variation import apply_variation

Z = torch.randn(400_000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
G, G_MAX = 40.0, 127.0 + 1.0  # programmed conductance and G_max in dG units


def _vary(**spec) -> torch.Tensor:
    v = ProgrammingVariation.model_validate(spec)
    return apply_variation(torch.full_like(Z, G), None, Z, v, 1.0, G_MAX)


def _quantile(t: torch.Tensor, p: float) -> float:
    return float(torch.quantile(t[::4], p))  # torch.quantile takes at most 2^24 elements; 100k suffice


def test_conductance_gaussian_variation_matches_rxnn_sigma_over_mu():
    """G' = G (1 + sigma z). Catches: sigma applied to R instead of G, or a wrong scale."""
    g = _vary(sigma_rel=0.2)
    se = 0.2 * G / math.sqrt(Z.numel())
    assert abs(float(g.mean()) - G) < 4 * se
    assert float(g.std()) == pytest.approx(0.2 * G, rel=0.01)
    assert _quantile(g, 0.99) == pytest.approx(G * (1 + 0.2 * stats.norm.ppf(0.99)), rel=0.01)


def test_resistance_lognormal_variation_is_jungs_r_reading():
    """R' = R exp(s z - s^2/2): R' has mean R and std sigma R, so G' = G exp(-s z + s^2/2) has mean
    G (1 + sigma^2) and its p-quantile is G exp(s^2/2 + s Phi^-1(p)). Catches: the conductance
    reading (mean G), or a sign error in the exponent (mean G exp(s^2) vs G)."""
    sigma = 0.5
    s = math.sqrt(math.log1p(sigma**2))
    g = _vary(sigma_rel=sigma, distribution="lognormal", domain="resistance")
    assert float(g.mean()) == pytest.approx(G * (1 + sigma**2), rel=0.01)
    r = 1.0 / g
    assert float(r.mean()) == pytest.approx(1.0 / G, rel=0.005)
    assert float(r.std()) == pytest.approx(sigma / G, rel=0.02)
    for p in (0.05, 0.5, 0.95):
        assert _quantile(g, p) == pytest.approx(G * math.exp(s * s / 2 + s * stats.norm.ppf(p)), rel=0.01)


def test_resistance_gaussian_variation_has_its_skew_and_ceiling():
    """Jung: R' = R (1 + eps), eps ~ N(0, sigma^2), so G' = G / (1 + sigma z), clipped at G_max.
    p-quantile of G' = G / (1 + sigma Phi^-1(1 - p)); P(G' = G_max) = Phi((G/G_max - 1) / sigma).
    At sigma = 0.5 the upper tail is heavy (mean well above G), which the conductance reading lacks."""
    sigma = 0.5
    g = _vary(sigma_rel=sigma, domain="resistance", ceiling="g_max")
    for p in (0.1, 0.5, 0.8):
        assert _quantile(g, p) == pytest.approx(G / (1 + sigma * stats.norm.ppf(1 - p)), rel=0.01)
    at_ceiling = float((g == G_MAX).double().mean())
    expect = stats.norm.cdf((G / G_MAX - 1) / sigma)
    assert abs(at_ceiling - expect) < 4 * math.sqrt(expect * (1 - expect) / Z.numel())
    assert float(g.max()) == G_MAX and float(g.mean()) > 1.2 * G


def test_ceiling_clips_the_conductance_reading_and_is_required_for_the_resistance_gaussian():
    g = _vary(sigma_rel=3.0, ceiling="g_max")
    assert float(g.max()) == G_MAX and float(g.min()) == 0.0
    assert float(_vary(sigma_rel=3.0).max()) > G_MAX  # without a ceiling the tail is as drawn
    with pytest.raises(ValueError, match="hardware.variation.ceiling must be 'g_max'"):
        ProgrammingVariation(sigma_rel=0.3, domain="resistance")


def test_a_layer_programs_the_resistance_reading():
    """Through the engine: a layer's programmed cells (not only the helper) follow the chosen domain."""
    torch.manual_seed(0)
    hw = HardwareSpec.model_validate(
        {"variation": {"sigma_rel": 0.5, "distribution": "lognormal", "domain": "resistance"}}
    )
    xm = convert(nn.Sequential(nn.Linear(256, 64)), hw)
    xm.calibrate([torch.rand(32, 256)])
    layer = xm.crossbar_layers()[0]
    xm.program([3])
    g_min_n = hw.device.g_min_s / hw.device.delta_g_s
    ratio = (layer.cells.h[0] + g_min_n) / (layer.target_levels() + g_min_n)
    assert float(ratio.mean()) == pytest.approx(1.25, rel=0.02)  # 1 + sigma^2; the conductance reading gives 1


def test_read_fluctuation_is_pytorx_eq2_read_to_read_and_static_variation_is_not():
    """PytorX eq. 2's (dG/3)^2 term read to read: one instance's reads vary with current std
    sigma dG V sqrt(2) (G+ and G- each fluctuate). The static reading (variation.sigma_abs_delta_g)
    gives every read of one instance the same value and varies across instances instead. Catches:
    the per-read term drawn once per instance, or the static one redrawn per read."""
    current, _, _, v, layer = _single_cell({"read_fluctuation": {"sigma_delta_g": 1 / 3}}, 20000, seeds=(7,))
    expect = (1 / 3) * layer.hw.device.delta_g_s * v * math.sqrt(2)
    assert float(current[0].std()) == pytest.approx(expect, rel=4 / math.sqrt(2 * 20000))
    static = _single_cell(
        {"variation": {"sigma_abs_delta_g": 1 / 3}, "device": {"g_min_s": 50e-6, "g_max_s": 383e-6}},
        64,
        seeds=range(2000),
    )[0]
    assert float(static.std(1).max()) == 0.0  # static: no read-to-read change
    dg = (383e-6 - 50e-6) / 127
    assert float(static[:, 0].std()) == pytest.approx((1 / 3) * dg * 1.63 * math.sqrt(2), rel=4 / math.sqrt(2 * 2000))


def test_each_kind_refuses_the_fields_it_would_ignore():
    """Crossbar training reads through the inference read (DAC loading, digital subtraction act), and
    refuses, naming why, what has no meaning for one trained conductance pair per weight. Catches a
    refusal list that drifts from what training models (either way: a field refused that acts, or one
    accepted that does nothing - the schema walk below then fails too)."""
    hw = HardwareSpec.model_validate(
        {
            "dac_loading": {"enabled": True},
            "rtn": {"enabled": True},
            "variation": {"sigma_rel": 0.1},
            "update": {"write_noise": 1.0},
            "adc": {"subtract": "digital", "full_scale_a": 1e-4},
            "input": {"dac_bits": 2},
        }
    )
    assert unused_fields(hw, "train") == []
    assert [n for n, _ in unused_fields(hw, "inference")] == ["update.write_noise"]
    slices = HardwareSpec.model_validate(
        {"device": {"bits_per_cell": 4}, "iv": {"model": "sinh"}, "adc": {"calibration_batches": 2}}
    )
    why = dict(unused_fields(slices, "train"))
    assert set(why) == {"device.bits_per_cell", "iv.model", "adc.calibration_batches"}
    assert (
        "one analog conductance pair" in why["device.bits_per_cell"]
        and "PytorX Alg. 1" in why["adc.calibration_batches"]
    )
    assert unused_fields(slices, "inference") == []
    # one slice: the per-slice ADC range is the layer's, in both kinds
    one = HardwareSpec.model_validate({"adc": {"range_scope": "slice"}})
    assert (
        [n for n, _ in unused_fields(one, "inference")]
        == [n for n, _ in unused_fields(one, "train")]
        == ["adc.range_scope"]
    )
    # a noise parameter whose effect is off changes nothing in either kind: refused until the effect is on
    idle = HardwareSpec.model_validate({"frequency_hz": 1e9, "rtn": {"occupancy": 0.3}, "input": {"v_read_v": 0.5}})
    for kind in ("inference", "train"):
        assert {n for n, _ in unused_fields(idle, kind)} == {"input.v_read_v", "rtn.occupancy", "frequency_hz"}
    on = HardwareSpec.model_validate(
        {"frequency_hz": 1e9, "read_noise": {"enabled": True}, "rtn": {"enabled": True, "occupancy": 0.3}}
    )
    assert unused_fields(on, "inference") == unused_fields(on, "train") == []


# PytorX Alg. 1 by hand ------------------------------------------------------------------------
# Layer y = x W^T, W = [[0.5, -0.2, 0.1], [-0.8, 0.3, 0.0]] (3 inputs, 2 outputs), 8-bit weights,
# inputs and ADC, calibration batches x1 = [1.0, -0.5, 0.2] and x2 = [0, 1.5, 0].
#   dw = max|w| / (2^7 - 1) = 0.8 / 127   (see engine.mapping on Alg. 1 line 4's 2^N)
#   w_hat = round(W / dw) = [[79, -32, 16], [-127, 48, 0]]
#   dx = mean(max|x1|, max|x2|) / 2^7 = 1.25 / 128 = 0.009765625  (signed: x1 has a negative entry)
#   x1_hat = round(x1 / dx) = [102, -51, 20];  x2_hat = [0, clamp(153.6) = 127, 0]
# One 7-bit slice: I = x_hat . w_hat per column:
#   batch 1: [102*79 + 51*32 + 20*16, -102*127 - 51*48] = [10010, -15402] -> max 15402
#   batch 2: [-127*32, 127*48] = [-4064, 6096]                             -> max 6096
#   dI = mean(15402, 6096) / 2^7 = 10749 / 128 = 83.9765625
#   read of x1: codes clamp(round([10010, -15402] / dI), -128, 127) = [119, -128]
# Two 4-bit slices (|w_hat| = 16 d1 + d0): 79 = (4, 15), 32 = (2, 0), 16 = (1, 0), 127 = (7, 15), 48 = (3, 0)
#   batch 1: slice 0 [102*15, -102*15] = [1530, -1530]; slice 1 [102*4 + 51*2 + 20, -102*7 - 51*3] = [530, -867]
#   batch 2: slice 0 [0, 0]; slice 1 [-127*2, 127*3] = [-254, 381]
#   layer scope: dI = mean(1530, 381) / 128 = 955.5 / 128; slice scope: [mean(1530, 0), mean(867, 381)] / 128
W_HAND = [[0.5, -0.2, 0.1], [-0.8, 0.3, 0.0]]
X1, X2 = [[1.0, -0.5, 0.2]], [[0.0, 1.5, 0.0]]


def _hand_layer(extra: dict):
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W_HAND))
    hw = HardwareSpec.model_validate({"adc": {"calibration_batches": 2}, **extra})
    xm = convert(nn.Sequential(lin), hw)
    xm.calibrate([torch.tensor(X1), torch.tensor(X2)])
    return xm, xm.crossbar_layers()[0]


def test_alg1_steps_match_hand_computed_values_one_slice():
    """Catches: dw over 2^N, dx from the max instead of the mean of batch maxima, dI over 2^N_adc,
    an unsigned code for signed data, or a missing clamp."""
    xm, layer = _hand_layer({})
    assert layer.mapped.delta_w == pytest.approx(0.8 / 127, rel=1e-7)
    assert torch.equal(layer.mapped.w_hat[0].t(), torch.tensor([[79, -32, 16], [-127, 48, 0]]))
    assert float(layer.delta_x) == 0.009765625
    assert float(layer.adc.delta_i) == pytest.approx(83.9765625, rel=1e-6)
    xm.program(None)
    with torch.no_grad():
        y = xm(torch.tensor(X1))[0]
    expect = torch.tensor([119.0, -128.0]) * 83.9765625 * 0.009765625 * (0.8 / 127)
    assert torch.allclose(y, expect, rtol=1e-5)


@pytest.mark.parametrize("scope, expect", [("layer", [955.5 / 128] * 1), ("slice", [765 / 128, 624 / 128])])
def test_alg1_adc_range_with_two_slices_is_the_mean_of_batch_maxima(scope, expect):
    """Catches: the layer range taken as the largest per-slice batch mean (765 / 128 here)."""
    _, layer = _hand_layer({"device": {"bits_per_cell": 4}, "adc": {"calibration_batches": 2, "range_scope": scope}})
    assert layer.grid.slices == 2
    assert layer.adc.delta_i.tolist() == pytest.approx(expect, rel=1e-6)


# No silent no-ops: every hardware field changes a result or is refused -----------------------
from engine.hardware import HardwareSpec as _HW  # noqa: E402
from engine.nonideal.iv import NonlinearSolveError  # noqa: E402
from engine.training import analog_layers, to_analog  # noqa: E402

# Values for fields whose default-based perturbation (x1.5, +1, flip, next option) would be invalid or
# inert in isolation; every other field is perturbed by the generic rule, so a new field is covered.
EXPLICIT = {
    "adc.full_scale_a": 2e-4,
    "adc.kind": "ideal",
    "variation.sigma_abs_s": 5e-7,
    "variation.domain": "resistance",
    "faults.stuck_at_gmax_rate": 0.05,
    "faults.stuck_at_gmin_rate": 0.05,
    "ir_drop.r_sense_ohm": 20.0,
    "ir_drop.r_driver_ohm": 20.0,
    "crossbar.rows": 12,
    "crossbar.cols": 12,
    "update.refresh_every": 2,
    "input.dac_bits": 4,
    "adc.calibration_batches": 2,
    "drift.model": "power_law",
    "variation.sigma_poly_us": [0.3, 1.0],
    "iv.newton_rtol": 0.05,
    "iv.newton_max_iter": 1,
}
# The context a field needs to act at all (the section it belongs to switched on, or a partner that
# the validator requires); the base then already differs, and only the field under test changes.
CONTEXT = {
    "variation.sigma_abs_s": {"variation": {"sigma_abs_delta_g": 0.0}},
    "variation.domain": {"variation": {"distribution": "lognormal"}},
    "ir_drop.solver_dtype": {"adc": {"kind": "ideal"}},
    # effects far below one ADC step act on the currents but rarely move a code: read them unquantised
    "input.v_read_v": {"adc": {"kind": "ideal"}},
    "column_awgn.sigma_lsb": {"adc": {"kind": "ideal"}},
    "adc.range_scope": {"device": {"bits_per_cell": 4}},
    "variation.ceiling": {"variation": {"sigma_rel": 2.0}},  # cells must be pushed past G_max to be clipped
    # time acts through drift (a time without drift is refused), drift at a time
    "time_s": {"time_s": 3600.0, "drift": {"model": "pcm"}},
    "drift.model": {"time_s": 3600.0, "drift": {"model": "pcm"}},
    "drift.t0_s": {"time_s": 3600.0, "drift": {"model": "pcm"}},
    "drift.nu_mean": {"time_s": 3600.0, "drift": {"model": "power_law"}},
    "drift.nu_std": {"time_s": 3600.0, "drift": {"model": "power_law"}},
    "drift.read_noise_1f": {"time_s": 3600.0, "drift": {"model": "pcm"}},
    "variation.sigma_poly_us": {"variation": {"sigma_abs_delta_g": 0.0}},
    "variation.poly_g_max_ref_us": {"variation": {"sigma_abs_delta_g": 0.0, "sigma_poly_us": [0.3, 1.0]}},
    # the sinh I-V leaves RxNN's (linear-load) DAC divider out; Newton settings act with exact IR drop
    "iv.model": {"dac_loading": {"enabled": False}},
    "iv.v0_v": {"dac_loading": {"enabled": False}, "iv": {"model": "sinh"}},
    "iv.newton_rtol": {"dac_loading": {"enabled": False}, "iv": {"model": "sinh"}, "adc": {"kind": "ideal"}},
    "iv.newton_max_iter": {"dac_loading": {"enabled": False}, "iv": {"model": "sinh"}},
    "drift.t_read_s": {
        "time_s": 3600.0,
        "drift": {"model": "pcm", "read_noise_1f": True},
        "adc": {"kind": "ideal"},
    },  # one slice: a per-slice range is the layer range
}
INFERENCE_BASE = {
    "crossbar": {"rows": 16, "cols": 16},
    "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.02},
    "variation": {"sigma_rel": 0.3, "sigma_abs_delta_g": 0.2},
    "read_noise": {"enabled": True},
    "rtn": {"enabled": True},
    "read_fluctuation": {"sigma_delta_g": 0.2},
    "column_awgn": {"sigma_lsb": 0.5},
    "ir_drop": {"enabled": True, "r_row_ohm": 50.0, "r_col_ohm": 50.0},
    "dac_loading": {"enabled": True},
}
TRAIN_BASE = {
    "crossbar": {"rows": 16, "cols": 16},
    "faults": {"stuck_at_gmax_rate": 0.02, "stuck_at_gmin_rate": 0.02},
    "variation": {"sigma_rel": 0.3, "sigma_abs_delta_g": 0.2},
    "ir_drop": {"enabled": True, "r_row_ohm": 50.0, "r_col_ohm": 50.0},
    "dac_loading": {"enabled": True},
    "update": {"nonlinearity": 0.5, "write_noise": 1.0},
    "read_noise": {"enabled": True},
    "rtn": {"enabled": True},
    "read_fluctuation": {"sigma_delta_g": 0.2},
    "column_awgn": {"sigma_lsb": 0.5},
}


def _leaves(model: type = _HW, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, _HW.__mro__[1]):  # a nested section
            out += _leaves(sub, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def _perturbed(path: str, info, current) -> object:
    if path in EXPLICIT:
        return EXPLICIT[path]
    options = getattr(info.annotation, "__args__", ())
    if options and all(isinstance(o, str) for o in options):
        return next(o for o in options if o != current)
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return current + 1
    return current * 1.5 if current else 0.1


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def _set(raw: dict, path: str, value) -> dict:
    section, _, field = path.rpartition(".")
    return _merge(raw, {section: {field: value}} if section else {field: value})


def _current(raw: dict, path: str):
    node = _HW.model_validate(raw).model_dump()
    for key in path.split("."):
        node = node[key]
    return node


def _inference_logits(raw: dict) -> torch.Tensor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 6))
    xm = convert(net, _HW.model_validate(raw))
    gen = torch.Generator().manual_seed(1)
    xm.calibrate([torch.rand(16, 24, generator=gen) * (1 + i) for i in range(8)])  # ranges grow per batch
    xm.program([4])
    xm.reset_read_noise()
    with torch.no_grad():
        return xm(torch.rand(32, 24, generator=torch.Generator().manual_seed(2)) * 2 - 0.5)


def _trained_weights(raw: dict) -> torch.Tensor:
    torch.manual_seed(0)
    net = to_analog(
        nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 6)), _HW.model_validate(raw), 4, [0.5, 0.5]
    )
    gen = torch.Generator().manual_seed(1)
    net.train()
    for _ in range(3):
        x, y = torch.rand(16, 24, generator=gen), torch.randint(0, 6, (16,), generator=gen)
        nn.functional.cross_entropy(net(x), y).backward()
        for layer in analog_layers(net):
            layer.apply_update(0.1)
    return torch.cat([layer.weight().flatten() for layer in analog_layers(net)])


@pytest.mark.parametrize("kind", ["inference", "train"])
def test_every_hardware_field_changes_the_result_or_is_refused(kind):
    """Walks every leaf of HardwareSpec (a new field is walked too), sets it away from its value in an
    everything-on base, and requires the logits (inference) or the trained weights (train) to change,
    or ``unused_fields`` to refuse it for that kind. Catches any field accepted and ignored."""
    base_raw, result = (INFERENCE_BASE, _inference_logits) if kind == "inference" else (TRAIN_BASE, _trained_weights)
    silent, refused, acted = [], [], []
    for path, info in _leaves():
        raw = _merge(base_raw, CONTEXT.get(path, {}))
        changed = _set(raw, path, _perturbed(path, info, _current(raw, path)))
        hw = _HW.model_validate(changed)
        if unused_fields(hw, kind):  # validation refuses the field, or the context it needs to act
            refused.append(path)
            continue
        assert path in [n for n in _flat_names(hw)], path
        try:
            after = result(changed)
        except NonlinearSolveError:  # an iteration limit that binds fails the trial: an effect, not silence
            acted.append(path)
            continue
        (acted if not torch.equal(result(raw), after) else silent).append(path)
    assert not silent, f"{kind}: fields accepted but without effect: {silent}"
    if kind == "inference":
        assert all(p.startswith("update.") for p in refused) and len(refused) == len(_HW().update.model_dump())
    else:
        assert {"device.bits_per_cell", "mapping.weight_bits", "iv.model", "time_s", "adc.range_scope"} <= set(refused)
        assert {"variation.sigma_rel", "faults.stuck_at_gmax_rate", "ir_drop.r_row_ohm", "update.write_noise"} <= set(
            acted
        )
        # through the inference read: DAC chunks and loading, digital subtraction, a given ADC range
        assert {"input.dac_bits", "dac_loading.enabled", "dac_loading.r_pd_ohm", "adc.subtract"} <= set(acted)
        assert "adc.full_scale_a" in acted
        assert {"read_noise.enabled", "rtn.sampling", "read_fluctuation.sigma_delta_g", "frequency_hz"} <= set(acted)


def _flat_names(hw: _HW) -> list[str]:
    from engine.hardware import _flat

    return list(_flat(hw.model_dump()))


# PytorX Fig. 4/5 frequency trend ---------------------------------------------------------------
def test_eq1_read_noise_at_1ghz_is_below_an_adc_step_and_does_not_collapse_accuracy(lenet, digits, calib_inputs):
    """PytorX eq. 1 at Table 1 parameters: the worst column (64 rows at G_max, every input at V_read)
    has i_rms = sqrt(64 G_max f (4 k T + 2 q V)) = 3.4 uA at 1 GHz, 0.07-0.27 of a LeNet-5 layer's
    8-bit ADC step even in that worst case, so accuracy does not collapse at 1 GHz as PytorX Fig. 4/5
    show (README: "Read noise and frequency"); the noise does reach the outputs, and 1000x the
    frequency moves far more of them. Catches: eq. 1 off by a large factor (f or V squared), noise
    that never reaches the logits, or a frequency field without effect."""
    from scipy import constants

    from engine.data import loader

    hw = HardwareSpec.model_validate({"read_noise": {"enabled": True}, "frequency_hz": 1e9})
    xm = convert(lenet, hw)
    xm.calibrate(calib_inputs)
    v = hw.input.v_read_v
    i_rms = math.sqrt(64 * hw.device.g_max_s * 1e9 * (4 * constants.k * 300 + 2 * constants.e * v))
    assert i_rms == pytest.approx(3.4e-6, rel=0.02)
    ratios = [
        i_rms / (float(layer.adc.delta_i.max()) * hw.device.delta_g_s * layer.delta_v_v)
        for layer in xm.crossbar_layers()
    ]
    assert 0.03 < min(ratios) and max(ratios) < 0.35, ratios
    test = loader(digits.test, 540)
    x = digits.test.tensors[0][:256]
    seeds = list(range(3))
    clean_top1 = evaluate(xm, test, None)[0].top1
    with torch.no_grad():
        clean = xm(x)
    moved = {}
    for f in (1e9, 1e12):
        xm.set_hardware(HardwareSpec.model_validate({"read_noise": {"enabled": True}, "frequency_hz": f}))
        top1 = [m.top1 for m in evaluate(xm, test, seeds)]
        xm.reset_read_noise()
        with torch.no_grad():
            moved[f] = float((xm(x) != clean).float().mean())
        if f == 1e9:
            assert clean_top1 - sum(top1) / 3 < 0.01
    assert 0 < moved[1e9] and moved[1e12] > 2 * moved[1e9]


def test_mmse_yu_eq6_uses_the_fraction_of_ones_over_weight_cells_only():
    """Yu eq. 5-6: E[j] = r p_v p_g, s_j^2 = r^2 p_v p_g (1 - p_v p_g). A 10 x 3 layer on 64 x 64 tiles
    (1-bit cells, 1-bit DAC): p_g is the fraction of ones among the 2 x 10 x 3 x 8 weight cells,
    counted here from the integer weights by hand-free bit arithmetic, not from the tiles. Catches:
    padding cells counted (p_g about 20x too small here)."""
    from engine.mitigations.mmse import _yu_eq6

    torch.manual_seed(3)
    hw = HardwareSpec.model_validate(
        {
            "device": {"bits_per_cell": 1},
            "mapping": {"weight_bits": 9},
            "input": {"input_bits": 4, "dac_bits": 1},
            "adc": {"bits": 4},
        }
    )
    xm = convert(nn.Sequential(nn.Linear(10, 3, bias=False)), hw)
    x = torch.rand(32, 10)
    xm.calibrate([x])
    layer = xm.crossbar_layers()[0]
    w_hat = layer.mapped.w_hat[0]  # (10, 3)
    mags = w_hat.abs()
    ones = sum(int(((mags >> b) & 1).sum()) for b in range(8))  # direct mapping: the other array is all 0
    p_g = ones / (2 * 10 * 3 * 8)
    codes = layer.coding.quantise(x, float(layer.delta_x))
    p_v = float((layer.coding.split(codes.flatten()) != 0).double().mean())
    m = _yu_eq6(layer, [x], xm.sensed_moments([x])[layer.name])
    assert float(m["mean_j"].flatten()[0]) == pytest.approx(64 * p_v * p_g, rel=1e-6)
    p = p_v * p_g
    assert float(m["var_j"].flatten()[0]) == pytest.approx(64 * 64 * p * (1 - p), rel=1e-6)
