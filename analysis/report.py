"""``report.html``: summary, yield and paired-comparison tables with the plots embedded (one file
that opens anywhere), built from a sweep's Parquet output only."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field

import pandas as pd

from . import plots
from .load import axes_of, axis_groups, expected_rows, load_frame, load_points, load_stopping
from .stats import paired_comparison, summary_with_ci, yield_table


@dataclass
class Report:
    html_path: str
    images: list[str]
    summary: pd.DataFrame
    yields: pd.DataFrame
    comparisons: pd.DataFrame
    figures: dict[str, object] = field(default_factory=dict)


def _numeric(points: pd.DataFrame, axis: str) -> bool:
    return pd.api.types.is_numeric_dtype(points[axis]) and not pd.api.types.is_bool_dtype(points[axis])


def build_report(uri: str, out_dir: str, threshold: float | None = None, baseline: str = "none") -> Report:
    """Compute the tables, draw the plots into ``out_dir`` and write ``out_dir/report.html``.

    ``threshold`` for the yield defaults to 1 point below the best mean top-1 of any point;
    paired comparisons are every mitigation against ``baseline`` (when it was run)."""
    rows = load_frame(uri)  # NoRows (the CLI exits 2) before anything is written
    os.makedirs(out_dir, exist_ok=True)
    plan = load_points(uri)
    points = plan.drop(["hardware"]).to_pandas()
    axes = axes_of(plan)
    groups = axis_groups(plan)
    expected = expected_rows(uri)
    summary = summary_with_ci(rows)
    if threshold is None:
        threshold = round(float(summary["mean"].max()) - 0.01, 4)
    yields = yield_table(rows, threshold)
    mits = list(dict.fromkeys(rows["mitigation"]))
    comparisons = (
        pd.concat(
            [paired_comparison(rows, m, baseline) for m in mits if m != baseline and baseline in mits],
            ignore_index=True,
        )
        if baseline in mits and len(mits) > 1
        else pd.DataFrame()
    )
    images, figures = [], {}

    def draw(name: str, fn, *args, **kwargs) -> None:
        path = os.path.join(out_dir, name)
        figures[name] = fn(*args, path=path, **kwargs)
        images.append(path)

    # one x axis per group of axes that advance together: its first numeric varying axis leads,
    # its zipped partners label the ticks (a zipped sweep is one curve, not scattered dots)
    leads: list[tuple[str, list[str]]] = []
    for group in groups:
        varying = [a for a in group if _numeric(points, a) and points[a].nunique() > 1]
        if varying:
            leads.append((varying[0], [a for a in group if a != varying[0] and points[a].nunique() > 1]))
    numeric_axes = [lead for lead, _ in leads]
    for axis, partners in leads:
        short = axis.rsplit(".", 1)[-1]
        draw(f"accuracy_vs_{short}.png", plots.accuracy_vs, summary, points, axis, axes, partners=partners)
        draw(f"yield_vs_{short}.png", plots.yield_vs, yields, points, axis, axes, partners=partners)
    draw("distributions.png", plots.distributions, rows, points, axes)
    if len(comparisons) and numeric_axes:
        for m in comparisons["a"].unique():
            draw(
                f"paired_{_slug(m)}_vs_{_slug(baseline)}.png",
                plots.paired_differences,
                rows,
                comparisons[comparisons.a == m],
                points,
                numeric_axes[0],
            )
    if len(numeric_axes) >= 2:  # a true grid: two leading axes of different groups
        for m in mits:
            draw(f"heatmap_{_slug(m)}.png", plots.heatmap, summary, points, numeric_axes[0], numeric_axes[1], m)

    stopping = load_stopping(uri)
    summary.merge(points, on="point_id").to_csv(os.path.join(out_dir, "summary.csv"), index=False)
    html_path = os.path.join(out_dir, "report.html")
    with open(html_path, "w") as f:
        f.write(
            _html(rows, points, axes, summary, yields, comparisons, stopping, images, threshold, baseline, expected)
        )
    return Report(html_path, images, summary, yields, comparisons, figures)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s).strip("_")[:40]


def _table(df: pd.DataFrame, points: pd.DataFrame, axes: list[str]) -> str:
    if df is None or not len(df):
        return "<p>(none)</p>"
    merged = df.merge(points, on="point_id", how="left") if "point_id" in df else df
    cols = ["point_index", *axes] + [c for c in df.columns if c != "point_id"] + ["point_id"]
    merged = merged[[c for c in dict.fromkeys(cols) if c in merged]]
    if "point_index" in merged:
        merged = merged.sort_values([c for c in ("point_index", "mitigation", "a") if c in merged])
    return merged.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="t")


def _html(
    rows, points, axes, summary, yields, comparisons, stopping, images, threshold, baseline, expected: int | None = None
) -> str:
    sweep = html.escape(str(rows["sweep_id"].iloc[0])) if len(rows) else "(empty)"
    partial = (
        (
            f'<p class="partial"><b>partial: {len(rows)} of {expected} rows</b> (the sweep is running or was '
            "interrupted; rerun it to complete)</p>"
        )
        if expected is not None and len(rows) < expected
        else ""
    )
    imgs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(open(p, "rb").read()).decode()}"/>'
        f"<figcaption>{html.escape(os.path.basename(p))}</figcaption></figure>"
        for p in images
    )
    stop = (
        f"<h2>Adaptive stopping: final n per point</h2>{_table(stopping, points, axes)}" if stopping is not None else ""
    )
    swept = html.escape(", ".join(axes) or "nothing")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>xbar-sweep report {sweep}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table.t{{border-collapse:collapse;font-size:12px}}
table.t td,table.t th{{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}}
figure{{display:inline-block;margin:8px}} img{{max-width:560px}}</style></head><body>
<h1>Sweep {sweep}</h1>{partial}
<p>{len(points)} points, {rows["mitigation"].nunique()} mitigations, {len(rows)} rows
(instances per point and mitigation: {int(summary["n"].min())}-{int(summary["n"].max())}).
Swept: {swept}.</p>
<h2>Top-1 per point and mitigation (95% bootstrap CI of the mean)</h2>{_table(summary, points, axes)}
<h2>Yield: P(top-1 &ge; {threshold:g}) with Clopper-Pearson 95% intervals</h2>{_table(yields, points, axes)}
<h2>Paired comparisons against {html.escape(baseline)} (same instances; Wilcoxon, Holm across points)</h2>
{_table(comparisons, points, axes)}
{stop}<h2>Plots</h2>{imgs}</body></html>"""
