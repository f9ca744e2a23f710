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
POWER = 0.8  # what a design must have at the effect a claim is about


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

    def interval_at(self, lower: float = ALPHA, upper: float = ALPHA) -> tuple[float, float]:
        """The interval whose ends are one-sided bounds at levels `lower` and `upper` (a Holm
        step's level each: sweeps/verdict.py prints the interval its decision used)."""
        def bound(level: float) -> float:
            if self.df <= 0:
                return math.inf
            return float(stats.t.ppf(1.0 - level, self.df)) * self.se
        return self.mean - bound(lower), self.mean + bound(upper)

    # ------------------------------------------------------------ power of the test made

    def _se_at(self, n: int) -> tuple[float, float]:
        """(standard error, degrees of freedom) this design would have with n seeds a row,
        at the spread observed: the variance of the mean scales as 1/n, the df as n − 1."""
        scale = (self.n - 1) / max(self.df, 1e-12) if self.df > 0 else 1.0
        return self.se * math.sqrt(self.n / n), (n - 1) / scale

    def power(self, alternative: float, boundary: float, upper: bool, level: float = ALPHA,
              n: int | None = None) -> float:
        """The power of the one-sided t-test of d against `boundary` (H1: d above it when
        `upper`) at `level`, if the true difference were `alternative`, with n seeds a row
        (default: this design's): statsmodels' noncentral-t power at the observed spread."""
        from statsmodels.stats.power import ttest_power  # 2 s to import: only where asked

        n = n or self.n
        se, df = self._se_at(n)
        if se <= 0 or df <= 0:
            return 1.0 if (alternative > boundary if upper else alternative < boundary) else 0.0
        # ttest_power takes a standardized effect and nobs: noncentrality = effect·√nobs
        effect = (alternative - boundary) / (se * math.sqrt(n))
        value = float(ttest_power(effect, n, level, df=df,
                                  alternative="larger" if upper else "smaller"))
        if math.isnan(value):  # a spread of rounding error: the noncentral t's tail underflows
            return 1.0 if (effect > 0 if upper else effect < 0) else 0.0
        return value

    def power_inside(self, alternative: float, margin: float, level: float = ALPHA,
                     n: int | None = None) -> float:
        """The power of TOST (both one-sided tests, d above −margin and below +margin, at
        `level`) if the true difference were `alternative`: P(lower) + P(upper) − 1, the
        standard bound (the exact value needs Owen's Q, which neither scipy nor statsmodels
        has for the paired t)."""
        both = (self.power(alternative, -margin, True, level, n)
                + self.power(alternative, margin, False, level, n) - 1.0)
        return max(0.0, both)

    def seeds_needed(self, power_at, limit: int = 200, power: float = POWER) -> int | None:
        """The fewest seeds a row at which `power_at(n)` reaches `power` (None: more than
        `limit`, or no spread measured)."""
        if self.df <= 0 or not math.isfinite(self.se):
            return None
        for n in range(2, limit + 1):
            if power_at(n) >= power:
                return n
        return None


def difference(a: list[float], b: list[float], seeds_a: list[int], seeds_b: list[int],
               mode: str, extra_variance: float = 0.0, resolution: float = 0.0) -> Difference:
    """The difference of row a over row b (a's values and seeds, b's), oriented so that a
    positive d is a being better under `mode` (min: lower is better). `extra_variance` adds to
    the variance of the mean difference (an accuracy's binomial error). `resolution` is the
    metric's step (1/N for an accuracy over N items): each value is known only to within it, so
    each value adds the variance of a rounding, r²/12; without it, seeds that all differ by the
    same number of items would give an interval of zero width."""
    sign = -1.0 if mode == "min" else 1.0
    rounding = resolution * resolution / 12.0
    if list(seeds_a) == list(seeds_b) and len(a) == len(b) and len(a) >= 2:
        d = [sign * (x - y) for x, y in zip(a, b)]
        s = math.sqrt(statistics.variance(d) + 2 * rounding)
        return Difference(statistics.mean(d), math.sqrt(s * s / len(d) + extra_variance),
                          len(d) - 1, len(d), True, tuple(d), tuple(seeds_a), s)
    va = (statistics.variance(a) if len(a) > 1 else 0.0) + rounding
    vb = (statistics.variance(b) if len(b) > 1 else 0.0) + rounding
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


def holm_levels(p_values: list[float], alpha: float = ALPHA) -> list[float]:
    """The level each hypothesis is tested at in Holm's step-down: the k-th smallest p-value
    (k from 0) against α/(m − k), until the first that fails; that step's level holds for every
    later one. An interval at these levels excludes its boundary exactly when Holm rejects."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    levels, stopped = [alpha] * len(p_values), None
    for rank, i in enumerate(order):
        step = alpha / (len(p_values) - (rank if stopped is None else stopped))
        if stopped is None and p_values[i] >= step:
            stopped = rank
        levels[i] = step
    return levels


def one_sample(values: list[float], seeds: list[int], resolution: float = 0.0) -> Difference:
    """Seed-wise differences already taken (per-seed LR sensitivities or ranks): paired;
    `resolution` the step of the values (ranks averaged over V variants: 1/V)."""
    s = math.sqrt((statistics.variance(values) if len(values) > 1 else 0.0)
                  + resolution * resolution / 6.0)
    return Difference(statistics.mean(values), s / math.sqrt(len(values)), len(values) - 1,
                      len(values), True, tuple(values), tuple(seeds), s)
