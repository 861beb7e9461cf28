"""Spec -> plan, without Ray: points, coupled seeds, resume bookkeeping, spec errors."""

from __future__ import annotations

import copy

import pytest

from sweep.plan import make_plan
from sweep.spec import SpecError, validate

BASE = {
    "name": "t",
    "seed": 7,
    "model": {"name": "lenet5", "train": {"epochs": 1}},
    "trials": 3,
    "mitigations": ["none", "ec"],
    "output": {"dir": "/tmp/never-written"},
}


def plan_of(extra: dict):
    raw = copy.deepcopy(BASE) | extra
    return make_plan(validate(raw), raw)


def test_grid_times_zip_points_and_row_count():
    plan = plan_of(
        {
            "hardware": {"read_noise": {"enabled": True}},  # the frequency acts through read noise
            "sweep": {
                "grid": {"hardware.frequency_hz": [1e7, 1e8, 1e9]},
                "zip": [
                    {"hardware.faults.stuck_at_gmax_rate": [0, 0.01], "hardware.faults.stuck_at_gmin_rate": [0, 0.05]}
                ],
            },
        }
    )
    assert len(plan.points) == 6 and plan.rows_total == 6 * 3 * 2
    assert plan.axis_types == {
        "hardware.frequency_hz": "float64",
        "hardware.faults.stuck_at_gmax_rate": "float64",
        "hardware.faults.stuck_at_gmin_rate": "float64",
    }
    assert {p.params["hardware.frequency_hz"] for p in plan.points} == {1e7, 1e8, 1e9}
    assert plan.points[1].spec.hardware.faults.stuck_at_gmin_rate == 0.05  # zipped with gmax 0.01
    assert "6 points" in plan.describe() and "= 36 rows" in plan.describe()


def test_seeds_are_coupled_across_rates_and_independent_across_layouts():
    plan = plan_of(
        {"sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.0, 0.1], "hardware.crossbar.rows": [32, 64]}}}
    )
    by = {(p.params["hardware.faults.stuck_at_gmin_rate"], p.params["hardware.crossbar.rows"]): p for p in plan.points}
    seeds = {k: [plan.seed(p, i) for i in range(3)] for k, p in by.items()}
    assert seeds[(0.0, 32)] == seeds[(0.1, 32)]  # same instance draw thresholded at two rates
    assert seeds[(0.0, 32)] != seeds[(0.0, 64)]  # another cell layout: independent draws
    assert len(set(seeds[(0.0, 32)])) == 3


def test_pending_lists_only_missing_rows_and_point_ids_are_stable():
    plan = plan_of({"sweep": {"grid": {"hardware.faults.stuck_at_gmax_rate": [0, 0.01]}}})
    again = plan_of({"sweep": {"grid": {"hardware.faults.stuck_at_gmax_rate": [0, 0.01]}}, "execution": {"workers": 7}})
    assert [p.id for p in plan.points] == [p.id for p in again.points] and plan.spec_hash == again.spec_hash
    p0 = plan.points[0]
    done = {(p0.id, 0, "none"), (p0.id, 0, "ec"), (p0.id, 1, "none")}
    todo = {(plan.points[t.point_index].id, i, m) for t in plan.pending(done) for i, ms in t.trials for m in ms}
    assert todo == plan.keys() - done


def test_result_affecting_changes_change_the_hash():
    a = plan_of({})
    assert plan_of({"execution": {"batch_size": 100}}).spec_hash != a.spec_hash  # read-noise draws
    assert plan_of({"hardware": {"adc": {"bits": 6}}}).points[0].id != a.points[0].id
    assert plan_of({"trials": 5}).points[0].id == a.points[0].id  # more instances: same points


def test_a_component_whose_numbers_changed_gets_new_point_ids_and_only_there():
    """FPT's batch statistics moved to a contiguous map (results version 2, rounding-level changes):
    sweeps using fpt, alone or in a composite, hash the version, so a resumed sweep never mixes its
    rows with version-1 rows; sweeps without it keep their ids."""
    from engine.mitigations.fpt import FreeParameterTuning
    from sweep.plan import result_content

    assert FreeParameterTuning.results_version == 2
    without = plan_of({})
    assert "mitigation_versions" not in result_content(without.spec)
    for mitigations in (["none", "fpt"], ["none", "ec+fpt"]):
        content = result_content(plan_of({"mitigations": mitigations}).spec)
        assert content["mitigation_versions"] == {"fpt": 2}, mitigations
        assert plan_of({"mitigations": mitigations}).points[0].id != without.points[0].id


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"sweep": {"grid": {"hardware.faults.stuck_at_gmax_rate": [0.0, 1.5]}}}, "stuck_at_gmax_rate"),
        ({"sweep": {"grid": {"hardware.nonsense": [1]}}}, "nonsense"),
        ({"sweep": {"zip": [{"hardware.frequency_hz": [1e8], "hardware.temperature_k": [300, 350]}]}}, "equal lengths"),
    ],
)
def test_bad_axis_values_name_the_axis(extra, needle):
    with pytest.raises(SpecError, match=needle):
        plan_of(extra)
