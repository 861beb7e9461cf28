"""analysis/: statistics against their definitions, plots and the report; adaptive stopping."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from analysis.report import build_report
from analysis.stats import bootstrap_mean_ci, ci_halfwidth, paired_comparison, yield_table
from sweep.adaptive import AdaptiveStopping
from sweep.driver import run_sweep
from sweep.plan import make_plan
from sweep.spec import validate


def test_bootstrap_ci_covers_the_true_mean_at_least_90_percent():
    rng = np.random.default_rng(0)
    a, b = 18.0, 2.0  # accuracies near 0.9, skewed like real top-1 distributions
    true = a / (a + b)
    hits = 0
    reps = 200
    for r in range(reps):
        lo, hi = bootstrap_mean_ci(rng.beta(a, b, 40), n_resamples=999, seed=r)
        hits += lo <= true <= hi
    assert hits / reps >= 0.90


def _paired_rows(rng, n, shift):
    base = rng.normal(0.9, 0.03, n)  # chip-to-chip spread shared by both mitigations
    a = base + shift + rng.normal(0, 0.01, n)
    b = base + rng.normal(0, 0.01, n)
    return pd.DataFrame(
        {
            "point_id": "p",
            "instance": np.tile(np.arange(n), 2),
            "mitigation": ["a"] * n + ["b"] * n,
            "top1": np.concatenate([a, b]),
        }
    )


def test_paired_test_finds_a_one_point_difference_and_holds_its_size():
    rng = np.random.default_rng(1)
    power = np.mean([paired_comparison(_paired_rows(rng, 100, 0.01), "a", "b")["p"].iloc[0] < 0.05 for _ in range(100)])
    size = np.mean([paired_comparison(_paired_rows(rng, 100, 0.0), "a", "b")["p"].iloc[0] < 0.05 for _ in range(400)])
    assert power >= 0.95
    assert 0.02 <= size <= 0.09  # ~5 % under the null (binomial 400 draws)
    res = paired_comparison(_paired_rows(rng, 100, 0.01), "a", "b").iloc[0]
    assert res.test == "wilcoxon" and res.wins + res.ties + res.losses == 100 and res.ci_low < 0.01 < res.ci_high


def test_unpaired_samples_use_mann_whitney_and_holm_corrects_across_points():
    df = pd.concat([_paired_rows(np.random.default_rng(s), 30, 0.0).assign(point_id=f"p{s}") for s in range(5)])
    df.loc[df.mitigation == "b", "instance"] += 1000  # no common instances
    res = paired_comparison(df, "a", "b")
    assert (res.test == "mannwhitney").all() and len(res) == 5
    assert (res.p_holm >= res.p).all() and (res.p_holm <= 1).all()


def test_yield_uses_clopper_pearson():
    df = pd.DataFrame({"point_id": "p", "mitigation": "m", "instance": range(20), "top1": [0.95] * 15 + [0.5] * 5})
    y = yield_table(df, 0.9).iloc[0]
    assert y["yield"] == 0.75 and y.passing == 15
    assert y.ci_low == pytest.approx(0.5090, abs=1e-3) and y.ci_high == pytest.approx(0.9134, abs=1e-3)  # exact 95 % CI


# adaptive stopping -----------------------------------------------------------------------------
def _adaptive_plan(tmp_path, ckpt=None):
    raw = {
        "name": "ad",
        "seed": 1,
        "model": {"name": "lenet5", "checkpoint": ckpt} if ckpt else {"name": "lenet5", "train": {"epochs": 1}},
        "data": {"name": "digits", "eval_size": 200, "calibration_size": 256},
        "hardware": {"faults": {"stuck_at_gmax_rate": 0.0}},
        "sweep": {"grid": {"hardware.faults.stuck_at_gmin_rate": [0.0, 0.05]}},
        "mitigations": ["none"],
        "trials": {"until": {"ci_halfwidth": 0.01, "min": 5, "max": 40}},
        "execution": {"workers": 2, "batch_size": 200, "trials_per_task": 2},
        "output": {"dir": str(tmp_path)},
    }
    return raw, make_plan(validate(raw), raw)


def test_adaptive_rounds_do_not_depend_on_arrival_order(tmp_path):
    raw, plan = _adaptive_plan(tmp_path)
    rng = random.Random(0)
    spread = {plan.points[0].id: 0.0, plan.points[1].id: 0.05}
    value = {(p.id, i): 0.9 + spread[p.id] * np.sin(7 * i + 1) for p in plan.points for i in range(40)}
    finals = []
    for _ in range(3):
        ad = AdaptiveStopping(plan, plan.spec.trials.until, {})
        pending = ad.initial_tasks()
        while pending:
            rng.shuffle(pending)  # any scheduling order
            task = pending.pop()
            pid = plan.points[task.point_index].id
            rows = [
                {"point_id": pid, "instance": i, "mitigation": m, "top1": value[(pid, i)]}
                for i, ms in task.trials
                for m in ms
            ]
            pending += ad.add(rows)
        finals.append({pid: (st.n, st.reason) for pid, st in ad.state.items()})
    assert finals[0] == finals[1] == finals[2]
    low, high = finals[0][plan.points[0].id], finals[0][plan.points[1].id]
    assert low == (5, "ci") and high[0] > 5


def test_adaptive_sweep_stops_a_low_variance_point_early_and_a_high_variance_one_later(
    ray_cluster, lenet_checkpoint, tmp_path
):
    ray_cluster.ensure()
    raw, plan = _adaptive_plan(tmp_path, lenet_checkpoint[0])
    out = run_sweep(validate(raw), raw, console=Console(file=io.StringIO()))
    assert out.complete
    stop = pq.read_table(tmp_path / "stopping.parquet").to_pandas().set_index("point_index")
    rows = pq.ParquetDataset(str(tmp_path / "rows")).read().to_pandas()
    n = rows.groupby("point_index").instance.nunique()
    assert stop.loc[0, "n"] == n[0] == 5 and stop.loc[0, "reason"] == "ci"  # fault-free: every chip the same
    assert stop.loc[1, "n"] == n[1] > 5  # faulty chips differ: more instances needed
    assert stop.loc[1, "reason"] == "max" or stop.loc[1, "ci_halfwidth"] <= 0.01
    sel = rows[rows.point_index == 1].sort_values("instance").top1.to_numpy()
    assert ci_halfwidth(sel) == pytest.approx(stop.loc[1, "ci_halfwidth"])


# plots and report ------------------------------------------------------------------------------
def _synthetic_sweep(root: str) -> tuple[list[str], list[str]]:
    """Write a two-axis sweep in the real output layout (plan.parquet + rows/part-*.parquet)."""
    rng = np.random.default_rng(3)
    rates, freqs = [0.0, 0.01, 0.02], [1e7, 1e8, 1e9]
    points = [
        {
            "point_index": k,
            "point_id": f"pt{k}",
            "hardware.faults.stuck_at_gmin_rate": r,
            "hardware.frequency_hz": f,
            "hardware": "{}",
        }
        for k, (r, f) in enumerate((r, f) for r in rates for f in freqs)
    ]
    os.makedirs(f"{root}/rows")
    pq.write_table(pa.Table.from_pylist(points), f"{root}/plan.parquet")
    mits = ["none", "ec", "row_perm"]
    rows = []
    for p in points:
        for i in range(30):
            chip = rng.normal(0, 0.02)
            for m in mits:
                loss = (
                    p["hardware.faults.stuck_at_gmin_rate"] * (10 if m == "none" else 2)
                    + np.log10(p["hardware.frequency_hz"]) / 100
                )
                rows.append(
                    {
                        "sweep_id": "syn-1",
                        "point_id": p["point_id"],
                        "point_index": p["point_index"],
                        "instance": i,
                        "mitigation": m,
                        "top1": float(np.clip(0.97 - loss + chip, 0, 1)),
                    }
                )
    pq.write_table(pa.Table.from_pylist(rows), f"{root}/rows/part-0.parquet")
    return [p["point_id"] for p in points], mits


def test_plots_render_with_the_swept_parameter_on_x_and_the_report_lists_everything(tmp_path):
    ids, mits = _synthetic_sweep(str(tmp_path / "sweep"))
    report = build_report(str(tmp_path / "sweep"), str(tmp_path / "report"))
    names = {os.path.basename(p) for p in report.images}
    assert {
        "accuracy_vs_stuck_at_gmin_rate.png",
        "accuracy_vs_frequency_hz.png",
        "yield_vs_frequency_hz.png",
        "distributions.png",
        "heatmap_none.png",
        "paired_ec_vs_none.png",
    } <= names
    for path in report.images:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000
    fig = report.figures["accuracy_vs_frequency_hz.png"]
    assert fig.axes[0].get_xlabel() == "hardware.frequency_hz" and fig.axes[0].get_xscale() == "log"
    assert (
        report.figures["accuracy_vs_stuck_at_gmin_rate.png"].axes[0].get_xlabel()
        == "hardware.faults.stuck_at_gmin_rate"
    )
    assert report.figures["paired_ec_vs_none.png"].axes[0].get_xlabel() == "hardware.faults.stuck_at_gmin_rate"
    html = open(report.html_path).read()
    assert all(i in html for i in ids) and all(f">{m}<" in html for m in mits)
    assert html.count("data:image/png;base64,") == len(report.images)  # self-contained
    ec = report.comparisons[report.comparisons.a == "ec"]
    assert (ec.mean_diff >= 0).all() and len(ec) == 9


def _zipped_sweep(root: str, drop: int) -> None:
    """The quickstart's layout: two fault rates zipped into one axis, plan metadata as the driver writes it."""
    import json

    pairs = [(0.0, 0.0), (0.005, 0.026), (0.0175, 0.0904)]
    gmax, gmin = "hardware.faults.stuck_at_gmax_rate", "hardware.faults.stuck_at_gmin_rate"
    points = [
        {"point_index": k, "point_id": f"z{k}", gmax: a, gmin: b, "hardware": "{}"} for k, (a, b) in enumerate(pairs)
    ]
    meta = {
        "xbar.axis_groups": json.dumps([[gmax, gmin]]),
        "xbar.instances": "10",
        "xbar.mitigations": json.dumps(["none", "ec"]),
    }
    os.makedirs(f"{root}/rows")
    pq.write_table(pa.Table.from_pylist(points).replace_schema_metadata(meta), f"{root}/plan.parquet")
    rng = np.random.default_rng(4)
    rows = [
        {
            "sweep_id": "zip-1",
            "point_id": p["point_id"],
            "point_index": p["point_index"],
            "instance": i,
            "mitigation": m,
            "top1": float(0.97 - (5 if m == "none" else 0.2) * p[gmin] + rng.normal(0, 0.01)),
        }
        for p in points
        for i in range(10)
        for m in ("none", "ec")
    ]
    pq.write_table(pa.Table.from_pylist(rows[: len(rows) - drop]), f"{root}/rows/part-0.parquet")


def test_zipped_axes_give_one_curve_per_mitigation_no_heatmap_and_a_partial_label(tmp_path):
    """Breakage caught: zipped axes drawn as isolated dots (one curve per partner value) and as a
    diagonal heatmap of NaN; a partial sweep reported as if complete."""
    _zipped_sweep(str(tmp_path / "z"), drop=5)
    report = build_report(str(tmp_path / "z"), str(tmp_path / "r"))
    names = {os.path.basename(p) for p in report.images}
    assert "accuracy_vs_stuck_at_gmax_rate.png" in names and not any(n.startswith("heatmap") for n in names)
    assert "accuracy_vs_stuck_at_gmin_rate.png" not in names  # the partner labels the ticks instead
    ax = report.figures["accuracy_vs_stuck_at_gmax_rate.png"].axes[0]
    lines = ax.get_lines()
    assert sorted(line.get_label() for line in lines) == ["ec", "none"] and all(
        len(line.get_xdata()) == 3 for line in lines
    )
    assert any("stuck_at_gmin_rate=0.0904" in t.get_text() for t in ax.get_xticklabels())
    assert "partial: 55 of 60 rows" in open(report.html_path).read()
    _zipped_sweep(str(tmp_path / "full"), drop=0)
    assert "partial:" not in open(build_report(str(tmp_path / "full"), str(tmp_path / "r2")).html_path).read()


def test_report_of_a_sweep_without_rows_exits_2(tmp_path, capsys):
    from sweep.cli import main

    _zipped_sweep(str(tmp_path / "z"), drop=0)
    os.remove(tmp_path / "z" / "rows" / "part-0.parquet")
    os.rmdir(tmp_path / "z" / "rows")
    assert main(["report", str(tmp_path / "z")]) == 2
    assert "no rows yet" in capsys.readouterr().err and not (tmp_path / "z" / "report").exists()
