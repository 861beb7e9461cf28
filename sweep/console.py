"""Terminal output: a rich progress bar on a TTY, plain periodic lines otherwise, and the
summary table per point and mitigation."""

from __future__ import annotations

import time

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


def say(console: Console, msg: str) -> None:
    """A plain ``[sweep] ...`` line (no rich markup in it)."""
    console.print(Text(f"[sweep] {msg}"))


class SweepProgress:
    """Counts rows; shows done/total, trials/s and ETA."""

    def __init__(
        self, console: Console, total_rows: int, mitigations: int, done_rows: int = 0, every_s: float = 10.0
    ) -> None:
        self.console, self.total, self.per_trial = console, total_rows, max(mitigations, 1)
        self.done, self.start_done, self.every = done_rows, done_rows, every_s
        self._bar: Progress | None = None
        self._last = 0.0

    def __enter__(self) -> SweepProgress:
        self._t0 = time.monotonic()
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("rows", total=self.total, completed=self.done, rate="")
        else:
            say(self.console, f"{self.done}/{self.total} rows already present")
        return self

    def set_total(self, total: int) -> None:
        """Adaptive sweeps grow their target as rounds open."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, rows: int) -> None:
        self.done += rows
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (self.done - self.start_done) / self.per_trial / elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate:.1f} trials/s")
        elif time.monotonic() - self._last >= self.every or self.done >= self.total:
            self._last = time.monotonic()
            left = (self.total - self.done) / self.per_trial / rate if rate > 0 else float("nan")
            say(
                self.console,
                f"{self.done}/{self.total} rows ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f} trials/s, ETA {left:.0f} s",
            )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def summary_table(summary: pd.DataFrame, params: pd.DataFrame, title: str) -> Table:
    """``summary``: analysis.summary.summarize output; ``params``: point_id + swept columns."""
    df = summary.merge(params, on="point_id", how="left")
    axes = [c for c in params.columns if c not in ("point_id", "point_index")]
    df = df.sort_values(["point_index", "mitigation"]) if "point_index" in df else df
    table = Table(title=title)
    for c in [*(a.rsplit(".", 1)[-1] for a in axes), "mitigation", "n", "top-1 mean", "std", "p5", "median", "p95"]:
        table.add_column(c, justify="left" if c == "mitigation" else "right")
    for r in df.to_dict("records"):
        std = "-" if pd.isna(r["std"]) else f"{r['std']:.4f}"
        table.add_row(
            *[f"{r[a]:g}" if isinstance(r[a], float) else str(r[a]) for a in axes],
            r["mitigation"],
            str(int(r["n"])),
            f"{r['mean']:.4f}",
            std,
            f"{r['p5']:.4f}",
            f"{r['median']:.4f}",
            f"{r['p95']:.4f}",
        )
    return table
