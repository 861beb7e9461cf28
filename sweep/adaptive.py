"""Adaptive stopping: add hardware instances at each point until the mean is known well enough.

Rule (``trials.until: {metric, ci_halfwidth, min, max}``), per point, in rounds:
  * round k evaluates instances 0 .. n_k - 1 for every mitigation, n_0 = ``min``;
  * when round k is complete, the half-width of the 95 % t interval of the mean of ``metric``,
    t_{0.975, n-1} s / sqrt(n), is computed for every mitigation from exactly those n_k values;
  * the point stops when every half-width is <= ``ci_halfwidth`` ("ci"), or when n_k = ``max``
    ("max"); otherwise n_{k+1} = min(max, max(n_k + 1, min(2 n_k, ceil(n_k (h / target)^2)))) with h
    the largest half-width - the predicted need, at most doubling per round.
Rounds depend only on the first n_k instances' results, never on arrival order, so the final n
of every point is the same whatever the number of workers, and a resumed sweep replays them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.stats import ci_halfwidth

from .plan import Plan, Task
from .spec import UntilRule


@dataclass
class _PointState:
    n: int
    finished: bool = False
    reason: str = ""
    halfwidths: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)


class AdaptiveStopping:
    def __init__(self, plan: Plan, rule: UntilRule, present: dict[tuple[str, int, str], float]) -> None:
        self.plan, self.rule = plan, rule
        self.values: dict[tuple[str, int, str], float] = dict(present)
        self.state = {p.id: _PointState(n=min(rule.min, rule.max)) for p in plan.points}

    def next_n(self, n: int, h: float) -> int:
        want = math.ceil(n * (h / self.rule.ci_halfwidth) ** 2) if math.isfinite(h) else 2 * n
        return min(self.rule.max, max(n + 1, min(2 * n, want)))

    def _round_complete(self, pid: str, n: int) -> bool:
        return all((pid, i, m) in self.values for i in range(n) for m in self.plan.labels)

    def _advance(self, pid: str) -> bool:
        """Evaluate completed rounds of one point; True if a new round was opened."""
        st = self.state[pid]
        opened = False
        while not st.finished and self._round_complete(pid, st.n):
            vals = {m: [self.values[(pid, i, m)] for i in range(st.n)] for m in self.plan.labels}
            st.halfwidths = {m: ci_halfwidth(np.asarray(v)) for m, v in vals.items()}
            st.means = {m: sum(v) / len(v) for m, v in vals.items()}
            worst = max(st.halfwidths.values())
            if worst <= self.rule.ci_halfwidth:
                st.finished, st.reason = True, "ci"
            elif st.n >= self.rule.max:
                st.finished, st.reason = True, "max"
            else:
                st.n = self.next_n(st.n, worst)
                opened = True
        return opened

    def _tasks_for(self, pid: str) -> list[Task]:
        st = self.state[pid]
        point = self.plan.by_id[pid]
        size = self.plan.spec.execution.trials_per_task
        trials = []
        for i in range(st.n):
            missing = tuple(m for m in self.plan.labels if (pid, i, m) not in self.values)
            if missing:
                trials.append((i, missing))
        return [Task(point.index, tuple(trials[j : j + size])) for j in range(0, len(trials), size)]

    def initial_tasks(self) -> list[Task]:
        """Replay the rounds that the present rows already complete, then the missing trials."""
        tasks = []
        for p in self.plan.points:
            self._advance(p.id)
            if not self.state[p.id].finished:
                tasks += self._tasks_for(p.id)
        return tasks

    def add(self, rows: list[dict]) -> list[Task]:
        """Record arrived rows; tasks of the next round for every point whose round completed."""
        touched = set()
        for r in rows:
            self.values[(r["point_id"], r["instance"], r["mitigation"])] = r[self.rule.metric]
            touched.add(r["point_id"])
        tasks = []
        for pid in touched:
            if self._advance(pid):
                tasks += self._tasks_for(pid)
        return tasks

    @property
    def rows_target(self) -> int:
        return sum(st.n for st in self.state.values()) * len(self.plan.labels)

    def table(self) -> pd.DataFrame:
        """Final n, reason and per-mitigation half-width of every point (``stopping.parquet``)."""
        out = []
        for p in self.plan.points:
            st = self.state[p.id]
            for m in self.plan.labels:
                out.append(
                    {
                        "point_index": p.index,
                        "point_id": p.id,
                        "mitigation": m,
                        "n": st.n,
                        "finished": st.finished,
                        "reason": st.reason or "running",
                        "metric": self.rule.metric,
                        "mean": st.means.get(m, float("nan")),
                        "ci_halfwidth": st.halfwidths.get(m, float("nan")),
                        "target": self.rule.ci_halfwidth,
                    }
                )
        return pd.DataFrame(out)
