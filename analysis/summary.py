"""Per (point, mitigation) summary of a metric: n, mean, std, min, p5, median, p95, max."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

STATS = ("n", "mean", "std", "min", "p5", "median", "p95", "max")


def summarize(
    rows: pa.Table | pd.DataFrame, metric: str = "top1", by: tuple[str, ...] = ("point_id", "mitigation")
) -> pd.DataFrame:
    """One row per group; ``std`` is the sample standard deviation (ddof=1, NaN for n = 1)."""
    df = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    g = df.groupby(list(by), sort=False)[metric]
    out = pd.DataFrame(
        {
            "n": g.count(),
            "mean": g.mean(),
            "std": g.std(ddof=1),
            "min": g.min(),
            "p5": g.quantile(0.05),
            "median": g.median(),
            "p95": g.quantile(0.95),
            "max": g.max(),
        }
    )
    return out.reset_index()
