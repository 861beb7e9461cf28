"""Non-linear cell I-V (hardware.iv, engine.nonideal.iv): I = G V_0 sinh(V / V_0).

Checked against closed forms (one cell, no wires), an independent solver (scipy.optimize.root on
the full nodal equations of a tile) and the linear limit V_0 -> infinity (the exact linear IR-drop
solve), in the solver and through a layer's read."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from test_nonidealities import _single_cell
from torch import nn

from engine import convert
from engine.hardware import HardwareSpec, unused_fields
from engine.irdrop import TileWires, effective_conductance
from engine.nonideal.iv import NonlinearSolveError, network_currents, reference_currents

WIRES = TileWires(r_row_ohm=2.0, r_col_ohm=5.0, r_sense_ohm=50.0, r_driver_ohm=30.0)


@pytest.mark.parametrize("m, n, v0", [(1, 1, 0.2), (4, 5, 0.25), (6, 3, 0.1), (8, 8, 0.05)])
def test_newton_solve_matches_scipy_root_on_the_full_nodal_equations(m, n, v0):
    """Several tiles and signed input vectors at once; V up to 6 V_0 (sinh 200x its linear value)."""
    rng = np.random.default_rng(m * 100 + n)
    g = rng.uniform(1e-6, 3e-4, (2, m, n))
    v = rng.uniform(-0.3, 0.3, (2, 3, m))
    cur, report = network_currents(torch.tensor(g), torch.tensor(v), WIRES, v0, max_bytes=1)  # one system a chunk
    ref = np.array([[reference_currents(g[s], v[s, k], WIRES, v0) for k in range(3)] for s in range(2)])
    assert np.abs(cur.numpy() - ref).max() <= 1e-8 * np.abs(ref).max()
    assert 1 <= report.iterations <= 50 and report.max_update <= report.tolerance
    # the non-linearity matters at these voltages: the linear network is far off
    lin = np.einsum("skm,smn->skn", v, effective_conductance(torch.tensor(g), WIRES).numpy())
    assert np.abs(lin - ref).max() > 1e-3 * np.abs(ref).max()


def test_newton_solve_reduces_to_the_linear_network_as_v0_grows():
    """The error against the exact linear solve falls as (V/V_0)^2 (sinh x = x + x^3/6 + ...)."""
    rng = np.random.default_rng(1)
    g = torch.tensor(rng.uniform(1e-6, 3e-4, (3, 8, 8)))
    v = torch.tensor(rng.uniform(0, 0.3, (3, 4, 8)))
    lin = torch.einsum("skm,smn->skn", v, effective_conductance(g, WIRES))
    errors = []
    for v0 in (1.0, 10.0, 100.0):
        cur, _ = network_currents(g, v, WIRES, v0)
        errors.append(float((cur - lin).abs().max() / lin.abs().max()))
    assert errors[2] < 1e-5
    for coarse, fine in zip(errors, errors[1:]):
        assert 70 < coarse / fine < 130  # x10 in V_0: x100 less error


def test_newton_refuses_to_return_an_unconverged_solution():
    g = torch.full((1, 6, 6), 3e-4, dtype=torch.float64)
    v = torch.full((1, 1, 6), 0.3, dtype=torch.float64)
    with pytest.raises(NonlinearSolveError, match="did not converge.*newton_max_iter"):
        network_currents(g, v, WIRES, 0.02, max_iter=2)


def test_one_cell_without_wires_follows_the_sinh_law():
    """No wires: the column current is G+ V_0 sinh(V/V_0) - G- V_0 sinh(V/V_0) exactly."""
    v0 = 0.5
    current, g_plus, g_minus, v, _ = _single_cell({"iv": {"model": "sinh", "v0_v": v0}}, 3)
    expect = (g_plus - g_minus) * v0 * math.sinh(v / v0)
    assert float(current[0, 0]) == pytest.approx(expect, rel=1e-5)
    linear, *_ = _single_cell({}, 3)
    assert float(current[0, 0]) / float(linear[0, 0]) == pytest.approx(v0 * math.sinh(v / v0) / v, rel=1e-5)


def _mlp_outputs(extra: dict, seeds=(3,)):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    x, calib = torch.rand(5, 12), torch.rand(16, 12)
    hw = HardwareSpec.model_validate({"crossbar": {"rows": 8, "cols": 16}, "input": {"v_read_v": 0.2}, **extra})
    xm = convert(net, hw)
    xm.calibrate([calib])
    xm.program(list(seeds))
    with torch.no_grad():
        return xm(x), xm


IR = {"enabled": True, "r_row_ohm": 20.0, "r_col_ohm": 20.0, "r_sense_ohm": 10.0}


def test_layer_read_with_exact_ir_drop_is_the_newton_solve_and_reports_iterations():
    ideal = {"adc": {"kind": "ideal"}}
    linear, xm_lin = _mlp_outputs({"ir_drop": IR, **ideal})
    far, xm_far = _mlp_outputs({"ir_drop": IR, "iv": {"model": "sinh", "v0_v": 100.0}, **ideal})
    near, xm_near = _mlp_outputs({"ir_drop": IR, "iv": {"model": "sinh", "v0_v": 0.1}, **ideal})
    assert torch.allclose(far, linear, rtol=1e-5, atol=1e-6)  # V_0 >> V: the linear IR-drop read
    assert float((near - linear).abs().max()) > 1e-2 * float(linear.abs().max())
    assert xm_lin.newton_iterations() is None
    assert 1 <= xm_near.newton_iterations() <= 50 and xm_near.newton_iterations() >= xm_far.newton_iterations()


def test_sinh_without_wires_changes_the_read_and_needs_no_newton():
    base, _ = _mlp_outputs({})
    sinh, xm = _mlp_outputs({"iv": {"model": "sinh", "v0_v": 0.1}})
    assert not torch.equal(base, sinh) and xm.newton_iterations() is None


@pytest.mark.parametrize(
    "hw, field",
    [
        ({"iv": {"v0_v": 0.5}}, "hardware.iv.v0_v"),
        ({"iv": {"model": "sinh", "newton_max_iter": 5}}, "hardware.iv.newton_rtol/newton_max_iter"),
        ({"iv": {"model": "sinh"}, "ir_drop": {"enabled": True, "model": "path"}}, "hardware.ir_drop.model"),
        ({"iv": {"model": "sinh"}, "dac_loading": {"enabled": True}}, "hardware.dac_loading"),
        ({"iv": {"model": "sinh", "v0_v": 0.01}}, "hardware.iv.v0_v must be >="),
    ],
)
def test_settings_that_cannot_act_are_refused(hw, field):
    with pytest.raises(ValidationError, match=re.escape(field)):
        HardwareSpec.model_validate(hw)


def test_training_refuses_the_non_linear_iv():
    assert [f for f, _ in unused_fields(HardwareSpec.model_validate({"iv": {"model": "sinh"}}), "train")] == [
        "iv.model"
    ]


def test_a_trial_reports_the_newton_iterations_of_each_strategy():
    """engine.trial.Outcome.solver_iterations (the rows' `solver_iterations`): the slowest solve's
    iterations with sinh + exact IR drop, None otherwise."""
    from engine.mitigations import parse_strategy
    from engine.trial import TrialEvaluator

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    data = [(torch.rand(8, 12), torch.randint(0, 3, (8,)))]
    ev = TrialEvaluator({None: net}, data, [torch.rand(16, 12)], torch.device("cpu"))
    base = {"crossbar": {"rows": 8, "cols": 16}, "input": {"v_read_v": 0.2}, "ir_drop": IR}
    strategies = [parse_strategy("none"), parse_strategy("ec")]
    sinh = ev.run(HardwareSpec.model_validate({**base, "iv": {"model": "sinh", "v0_v": 0.1}}), 5, strategies)
    assert all(3 <= o.solver_iterations <= 50 for o in sinh)
    assert all(o.solver_iterations is None for o in ev.run(HardwareSpec.model_validate(base), 5, strategies))


def test_the_newton_read_creates_no_tensor_on_the_default_device():
    """As tests/test_scale.py does for the other effects: with the default device ``meta`` a tensor made
    without ``device=`` in the sinh paths (with and without wires) fails the trial; results equal a
    normal run (model and data made on the CPU beforehand)."""
    from engine.mitigations import parse_strategy
    from engine.trial import TrialEvaluator

    def evaluator() -> TrialEvaluator:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
        gen = torch.Generator().manual_seed(1)
        data = [(torch.rand(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen))]
        return TrialEvaluator({None: net}, data, [torch.rand(16, 12, generator=gen)], torch.device("cpu"))

    base = {"crossbar": {"rows": 8, "cols": 16}, "input": {"v_read_v": 0.2}, "read_noise": {"enabled": True}}
    specs = [
        HardwareSpec.model_validate({**base, **extra, "iv": {"model": "sinh", "v0_v": 0.1}})
        for extra in ({"ir_drop": IR}, {})
    ]

    def run(ev: TrialEvaluator) -> list:
        return [(o.metrics, o.solver_iterations) for hw in specs for o in ev.run(hw, 5, [parse_strategy("none")])]

    ref = run(evaluator())
    ev = evaluator()
    with torch.device("meta"):
        assert run(ev) == ref
