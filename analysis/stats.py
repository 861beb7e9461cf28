"""Statistics over hardware instances: summaries with bootstrap CIs, yield with Clopper-Pearson
intervals, paired and unpaired comparisons of mitigations with Holm correction across points."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .summary import summarize

GROUP = ["point_id", "mitigation"]


def bootstrap_mean_ci(
    x: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """BCa bootstrap CI of the mean (scipy.stats.bootstrap); degenerate samples give (mean, mean)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return (float("nan"), float("nan"))
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summary_with_ci(df: pd.DataFrame, metric: str = "top1", confidence: float = 0.95) -> pd.DataFrame:
    """n, mean, std, min, p5, median, p95, max and the bootstrap CI of the mean per (point, mitigation)."""
    out = summarize(df, metric, tuple(GROUP))
    cis = df.groupby(GROUP, sort=False)[metric].apply(lambda s: bootstrap_mean_ci(s.to_numpy(), confidence))
    out["ci_low"] = [cis[(p, m)][0] for p, m in zip(out.point_id, out.mitigation)]
    out["ci_high"] = [cis[(p, m)][1] for p, m in zip(out.point_id, out.mitigation)]
    return out


def yield_table(df: pd.DataFrame, threshold: float, metric: str = "top1", confidence: float = 0.95) -> pd.DataFrame:
    """Fraction of instances (chips) with ``metric >= threshold``, Clopper-Pearson interval."""
    rows = []
    for (point, mit), s in df.groupby(GROUP, sort=False)[metric]:
        k, n = int((s >= threshold).sum()), int(s.count())
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
        rows.append(
            {
                "point_id": point,
                "mitigation": mit,
                "threshold": threshold,
                "n": n,
                "passing": k,
                "yield": k / n,
                "ci_low": ci.low,
                "ci_high": ci.high,
            }
        )
    return pd.DataFrame(rows)


def paired_comparison(df: pd.DataFrame, a: str, b: str, metric: str = "top1", confidence: float = 0.95) -> pd.DataFrame:
    """Mitigation ``a`` minus ``b`` per point. On the instances both were evaluated on (common
    random numbers): mean difference with a t interval, Wilcoxon signed-rank p-value, wins / ties
    / losses. Without common instances: Mann-Whitney U on the two samples. p-values are
    Holm-corrected across points (``p_holm``)."""
    rows = []
    for point, g in df.groupby("point_id", sort=False):
        sa = g[g.mitigation == a].set_index("instance")[metric]
        sb = g[g.mitigation == b].set_index("instance")[metric]
        common = sa.index.intersection(sb.index)
        rec = {"point_id": point, "a": a, "b": b}
        if len(common) >= 2:
            d = (sa.loc[common] - sb.loc[common]).to_numpy()
            mean, sem = d.mean(), d.std(ddof=1) / np.sqrt(len(d))
            half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * sem if sem > 0 else 0.0
            p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
            rec.update(
                test="wilcoxon",
                n=len(d),
                mean_diff=mean,
                ci_low=mean - half,
                ci_high=mean + half,
                p=p,
                wins=int((d > 0).sum()),
                ties=int((d == 0).sum()),
                losses=int((d < 0).sum()),
            )
        elif len(sa) and len(sb):
            p = float(stats.mannwhitneyu(sa, sb, alternative="two-sided").pvalue)
            rec.update(
                test="mannwhitney",
                n=min(len(sa), len(sb)),
                mean_diff=sa.mean() - sb.mean(),
                ci_low=np.nan,
                ci_high=np.nan,
                p=p,
                wins=np.nan,
                ties=np.nan,
                losses=np.nan,
            )
        else:
            continue
        rows.append(rec)
    out = pd.DataFrame(rows)
    if len(out) > 1:  # (statsmodels runs a full gc.collect per call: skip the one-point identity)
        out["p_holm"] = multipletests(out["p"].to_numpy(), method="holm")[1]
    elif len(out):
        out["p_holm"] = out["p"]
    return out


def ci_halfwidth(x: np.ndarray, confidence: float = 0.95) -> float:
    """Half-width of the t interval of the mean (the adaptive-stopping rule)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return float("inf")
    return float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
