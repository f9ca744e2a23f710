"""The difference between two rows of a table, and what can be said of it.

Rows of a table share their seeds (for a seed, every row starts from the same initial model
and sees the same batches and the same evaluation: tests/test_task_contract.py), so the seed-wise
differences carry the comparison: a paired t interval with n − 1 degrees of freedom. Rows that
do not share their seeds (other seed lists, or other lengths) are compared by Welch's t interval.
An accuracy's binomial error over the questions it was scored on can be added to the variance.

Why t and not a sign-flip permutation test: with the 3 seeds our tables use, the smallest
one-sided p-value an exact sign-flip test can give is 1/8, so it could never decide anything at
95%; the t interval can, under the usual normal model of the seed-wise differences.

Everything is a 95% interval, or equivalently a one-sided t-test at 0.025 against the boundary a
claim needs (0 for "better", −δ for "matches or beats", ±δ for "matches").
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95
ALPHA = (1.0 - LEVEL) / 2  # each one-sided test


@dataclass(frozen=True)
class Difference:
    """d = how much the claimed row is better than the other, in the metric's units (positive:
    the claimed direction), over seeds."""

    mean: float
    se: float  # standard error of the mean difference
    df: float  # degrees of freedom of its t distribution
    n: int  # seeds (paired), or the smaller row's seeds (Welch)
    paired: bool
    per_seed: tuple[float, ...] = ()  # the seed-wise differences (paired)
    seeds: tuple[int, ...] = ()
    spread: float = 0.0  # the per-seed standard deviation of d (paired) or the pooled one

    @property
    def design(self) -> str:
        if self.paired:
            return f"paired by seed ({', '.join(map(str, self.seeds))}), t with {self.df:g} df"
        return f"Welch's t ({self.df:.3g} df): the rows do not share their seeds"

    def quantile(self) -> float:
        return float(stats.t.ppf(1.0 - ALPHA, self.df)) if self.df > 0 else math.inf

    @property
    def half_width(self) -> float:
        """The interval's half-width: the smallest difference this design can tell from 0."""
        return self.quantile() * self.se if self.se > 0 else (0.0 if self.df > 0 else math.inf)

    @property
    def interval(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width

    def p_above(self, boundary: float) -> float:
        """One-sided p-value of H0: d ≤ boundary (small: d lies above it)."""
        return self._tail((self.mean - boundary), upper=True)

    def p_below(self, boundary: float) -> float:
        """One-sided p-value of H0: d ≥ boundary (small: d lies below it)."""
        return self._tail((self.mean - boundary), upper=False)

    def _tail(self, gap: float, upper: bool) -> float:
        if self.df <= 0:
            return 1.0
        if self.se == 0:
            return 0.0 if (gap > 0 if upper else gap < 0) else 1.0
        t = gap / self.se
        return float(stats.t.sf(t, self.df) if upper else stats.t.cdf(t, self.df))

    def seeds_needed(self, effect: float, limit: int = 1000) -> int | None:
        """Seeds a design with this spread would need for its half-width to fall below
        `effect` (None: more than `limit`, or no spread measured)."""
        if effect <= 0 or self.spread <= 0 or not math.isfinite(self.spread):
            return None
        for n in range(2, limit + 1):
            scale = 1.0 if self.paired else math.sqrt(2.0)
            if stats.t.ppf(1.0 - ALPHA, n - 1) * scale * self.spread / math.sqrt(n) < effect:
                return n
        return None


def difference(a: list[float], b: list[float], seeds_a: list[int], seeds_b: list[int],
               mode: str, extra_variance: float = 0.0) -> Difference:
    """The difference of row a over row b (a's values and seeds, b's), oriented so that a
    positive d is a being better under `mode` (min: lower is better). `extra_variance` adds to
    the variance of the mean difference (an accuracy's binomial error)."""
    sign = -1.0 if mode == "min" else 1.0
    if list(seeds_a) == list(seeds_b) and len(a) == len(b) and len(a) >= 2:
        d = [sign * (x - y) for x, y in zip(a, b)]
        s = statistics.stdev(d)
        return Difference(statistics.mean(d), math.sqrt(s * s / len(d) + extra_variance),
                          len(d) - 1, len(d), True, tuple(d), tuple(seeds_a), s)
    va = statistics.variance(a) if len(a) > 1 else 0.0
    vb = statistics.variance(b) if len(b) > 1 else 0.0
    var = va / len(a) + vb / len(b)
    df = (var * var / ((va / len(a)) ** 2 / max(len(a) - 1, 1) + (vb / len(b)) ** 2
                       / max(len(b) - 1, 1))) if va + vb > 0 else min(len(a), len(b)) - 1
    return Difference(sign * (statistics.mean(a) - statistics.mean(b)),
                      math.sqrt(var + extra_variance), df, min(len(a), len(b)), False,
                      spread=math.sqrt((va + vb) / 2))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value as it compares with the unadjusted level."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def one_sample(values: list[float], seeds: list[int]) -> Difference:
    """Seed-wise differences already taken (per-seed LR sensitivities or ranks): paired."""
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return Difference(statistics.mean(values), s / math.sqrt(len(values)), len(values) - 1,
                      len(values), True, tuple(values), tuple(seeds), s)
