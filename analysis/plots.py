"""Plots of sweep results (matplotlib, Agg backend: no display needed).

Every function draws from DataFrames produced by :mod:`analysis.stats` / :mod:`analysis.load`,
saves a PNG and returns the figure (closed), so callers and tests can inspect its axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _log_x(values) -> bool:
    """Log-x when a positive axis spans at least two decades (PytorX Fig. 4 style)."""
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and x > 0], dtype=float)
    return len(v) > 1 and v.max() / v.min() >= 100


def _save(fig, path: str):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _others(points: pd.DataFrame, axis: str, axes: list[str], partners: list[str]) -> list[str]:
    """Varying axes that are neither ``axis`` nor zipped with it (each gets its own curves)."""
    return [a for a in axes if a != axis and a not in partners and points[a].nunique() > 1]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _bands(
    table: pd.DataFrame,
    points: pd.DataFrame,
    axis: str,
    axes: list[str],
    value: str,
    ylabel: str,
    path: str,
    marker: str,
    partners: Sequence[str] = (),
) -> plt.Figure:
    """One line with its CI band per mitigation (and per value of any other varying axis that is
    not zipped with ``axis``); zipped partners label the x ticks under the leading axis's values."""
    partners = list(partners)
    df = table.merge(points, on="point_id")
    others = _others(points, axis, axes, partners)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, g in df.groupby(["mitigation", *others], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values(axis)
        label = key[0] + "".join(f", {o.rsplit('.', 1)[-1]}={v}" for o, v in zip(others, key[1:]))
        (line,) = ax.plot(g[axis], g[value], marker=marker, label=label)
        ax.fill_between(g[axis], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.2)
    if _log_x(df[axis]):
        ax.set_xscale("log")
    if partners:  # zipped axes: the leading axis's values, each with its partners' values under it
        ticks = points.drop_duplicates(axis).sort_values(axis)
        labels = [
            "\n".join([_fmt(r[axis])] + [f"{p.rsplit('.', 1)[-1]}={_fmt(r[p])}" for p in partners])
            for r in ticks.to_dict("records")
        ]
        ax.set_xticks(ticks[axis].tolist(), labels, fontsize=7)
        ax.minorticks_off()
    ax.set_xlabel(axis + "".join(f" (zipped with {p})" for p in partners))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def accuracy_vs(
    summary: pd.DataFrame, points: pd.DataFrame, axis: str, axes: list[str], path: str, partners: Sequence[str] = ()
) -> plt.Figure:
    """Mean top-1 with its bootstrap CI band per mitigation vs ``axis`` (PytorX Fig. 2 style)."""
    return _bands(summary, points, axis, axes, "mean", "top-1 (mean, 95% CI)", path, "o", partners)


def yield_vs(
    yields: pd.DataFrame, points: pd.DataFrame, axis: str, axes: list[str], path: str, partners: Sequence[str] = ()
) -> plt.Figure:
    """Yield (fraction of chips meeting the threshold) with Clopper-Pearson bands vs ``axis``."""
    label = f"yield: P(top-1 >= {yields['threshold'].iloc[0]:g})"
    return _bands(yields, points, axis, axes, "yield", label, path, "s", partners)


def distributions(
    rows: pd.DataFrame, points: pd.DataFrame, axes: list[str], path: str, metric: str = "top1", max_points: int = 12
) -> plt.Figure:
    """Per point (x axis, labelled by its swept values), the distribution over instances of each
    mitigation as violins."""
    pts = points.sort_values("point_index").head(max_points)
    mits = list(dict.fromkeys(rows["mitigation"]))
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(pts) * max(1, len(mits)) ** 0.5), 4.5))
    width = 0.8 / max(len(mits), 1)
    for j, mit in enumerate(mits):
        data, pos = [], []
        for i, pid in enumerate(pts["point_id"]):
            v = rows[(rows.point_id == pid) & (rows.mitigation == mit)][metric].to_numpy()
            if len(v):
                data.append(v)
                pos.append(i + (j - (len(mits) - 1) / 2) * width)
        if data:
            parts = ax.violinplot(data, positions=pos, widths=width * 0.9, showmedians=True)
            bodies: list = list(parts["bodies"])  # type: ignore[call-overload]
            for body in bodies:
                body.set_label(mit)
            bodies[0].set_label(mit)
    labels = [
        ", ".join(
            f"{a.rsplit('.', 1)[-1]}={r[a]:g}" if isinstance(r[a], float) else f"{a.rsplit('.', 1)[-1]}={r[a]}"
            for a in axes
        )
        or r["point_id"]
        for r in pts.to_dict("records")
    ]
    ax.set_xticks(range(len(pts)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_xlabel(", ".join(axes) if axes else "point")
    ax.set_ylabel(f"{metric} per hardware instance")
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    return _save(fig, path)


def paired_differences(
    rows: pd.DataFrame, comparison: pd.DataFrame, points: pd.DataFrame, axis: str, path: str, metric: str = "top1"
) -> plt.Figure:
    """Per-instance differences (a - b on the same chip) per point, with the mean and its CI."""
    a, b = comparison["a"].iloc[0], comparison["b"].iloc[0]
    df = comparison.merge(points, on="point_id").sort_values(axis)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.arange(len(df))
    for x, pid in zip(xs, df["point_id"]):
        g = rows[rows.point_id == pid]
        sa = g[g.mitigation == a].set_index("instance")[metric]
        sb = g[g.mitigation == b].set_index("instance")[metric]
        d = (sa - sb).dropna().to_numpy()
        jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(d))
        ax.scatter(x + jitter, d, s=6, alpha=0.4, color="tab:blue")
    ax.errorbar(
        xs,
        df["mean_diff"],
        yerr=[df["mean_diff"] - df["ci_low"], df["ci_high"] - df["mean_diff"]],
        fmt="o",
        color="black",
        capsize=3,
        label="mean, 95% CI",
    )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(xs, [f"{v:g}" if isinstance(v, float) else str(v) for v in df[axis]])
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric}: {a} - {b} (same instance)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def heatmap(summary: pd.DataFrame, points: pd.DataFrame, x: str, y: str, mitigation: str, path: str) -> plt.Figure:
    """Mean top-1 of one mitigation over a two-axis sweep."""
    df = summary[summary.mitigation == mitigation].merge(points, on="point_id")
    grid = df.pivot_table(index=y, columns=x, values="mean", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    im = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    for (i, j), v in np.ndenumerate(grid.to_numpy()):
        ax.text(
            j,
            i,
            f"{v:.3f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v < grid.to_numpy().mean() else "black",
        )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"mean top-1, {mitigation}")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
