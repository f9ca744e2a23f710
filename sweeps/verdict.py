"""A table's verdict on its claim, by one stated rule, with the numbers and the power it rests on.

The spec states its claim as comparisons of rows (`verdict:`, one part or a list of parts;
sweeps/spec.py ClaimPart). Each comparison is the difference d of the claimed row over another
row, positive in the claimed direction, at each row's chosen setting (sweeps/stats.py: paired by
seed where the rows share their seeds, Welch's t otherwise; an accuracy may add its binomial
error). Its 95% t interval decides, the same way for every kind:

    better            reproduced when the interval lies above 0; not reproduced below it
    matches_or_beats  reproduced when its lower end lies above −δ (non-inferiority with margin
                      δ); not reproduced when its upper end lies below −δ
    matches           reproduced when it lies inside ±δ (equivalence); not reproduced when it
                      lies wholly beyond δ or −δ
    sensitivity       d = the other row's LR sensitivity (Wortsman et al. 2023, §3.1: the mean
                      over the lr grid of min(ℓ(η), ℓ₀) − min_η ℓ(η), per seed) minus the claimed
                      row's; then as `better`
    average_rank      d = per seed, the other optimizer's rank averaged over the variants minus
                      the claimed one's; then as `better`

Equivalently, each is a one-sided t-test at 0.025; against several rows (or variants) the
p-values are Holm-adjusted within the part, and each end of a printed interval is the one-sided
bound at the level its Holm step was tested at (sweeps/stats.py holm_levels), so that a printed
interval reads as the decision does. Otherwise:

    smaller than claimed  a `better` claim (or sensitivity, average_rank) with a stated effect
                      E whose interval lies below E (H0: d ≥ E rejected, Holm-adjusted): the
                      paper's effect is excluded, though the sign may be undecided
    underpowered      the test made has less than 80% power (statsmodels' noncentral t) at
                      the difference it must detect: the claimed effect E for `better`; for a
                      margin, the difference observed (the boundary tested is −δ, or ±δ by
                      TOST); with the seeds a row that 80% would take at the spread observed
    inconclusive      the design had the power and did not decide

A metric with a resolution (`metric.resolution`: 1/N for an accuracy over N items; ranks over
V variants: 1/V) adds each value's rounding variance, so that seeds which all differ by the same
count of items do not give an interval of zero width.

A comparison cannot be `reproduced` when a row the claim beats or matches has its best lr on an
edge of its grid (it may be under-tuned), nor — for the `matches` kinds — when both rows lie
within the noise or the margin of the metric's ceiling (equal by construction); it cannot be
`not reproduced` when the claimed row's best lr is on an edge. Parts and comparisons combine:
not reproduced if any is, else smaller than claimed if any is, reproduced if all are,
underpowered if any is, else inconclusive.
A spec without a claim (an ablation, a smoke test) gets `no claim`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from sweeps import edges
from sweeps.collect import Cell, Row
from sweeps.spec import ClaimPart, Metric, Table
from sweeps.stats import ALPHA, POWER, Difference, difference, holm, holm_levels, one_sample

OUTCOMES = ("reproduced", "not reproduced", "smaller than claimed", "underpowered",
            "inconclusive", "failed", "no claim")
UNDECIDED = ("underpowered", "inconclusive")
INSIDE = "the interval holds both outcomes"


@dataclass
class Comparison:
    """One comparison of a claim: the claimed row against another, and its outcome."""

    part: ClaimPart
    claimed: str
    other: str
    metric: str
    difference: Difference | None = None
    means: tuple[float, float] | None = None
    size: tuple[float, str] | None = None  # (δ or the claimed effect, where it comes from)
    p_for: float = 1.0  # one-sided p of the claim's boundary, Holm-adjusted in `decide`
    p_against: float = 1.0
    p_short: float = 1.0  # of H0: d ≥ the claimed effect (a `better` kind with an effect)
    level_for: float = ALPHA  # the one-sided level each test's Holm step used
    level_against: float = ALPHA
    level_short: float = ALPHA
    needed: int | None = None  # seeds a row for 80% power (underpowered)
    stages: str = ""  # a two-stage design's account (sweeps/sequential.py), in place of a CI
    unfunded: bool = False  # went on past stage 1, but its stage 2 ran no seeds
    minutes_a_seed: float | None = None  # one more seed of both rows: their mean run time
    outcome: str = "inconclusive"
    reason: str = ""

    @property
    def short(self) -> str:
        """The comparison in the verdict line: its outcome, interval, detectable difference
        and margin or claimed effect."""
        if self.difference is None:
            return f"{self.claimed} vs {self.other}: {self.outcome} ({self.reason})"
        d = self.difference
        lo, hi = self.interval
        size = ""
        if self.size is not None:
            size = f", {'δ' if self.part.margin is not None else 'claimed effect'} " \
                   f"{self.size[0]:.3g}"
        blocked = f": {self.reason}" if self.outcome == "inconclusive" and not \
            self.reason.startswith(INSIDE) else ""
        if self.outcome == "underpowered":
            size += (f"; {self.needed} seeds a row for 80% power" if self.needed else
                     "; over 200 seeds a row for 80% power")
            if self.needed and self.minutes_a_seed:
                size += f", about {self.needed * self.minutes_a_seed:.0f} min of runs"
        if self.stages:
            return (f"{self.claimed} vs {self.other}: {self.outcome} (d {d.mean:+.3g} over "
                    f"{d.n} seeds; {self.stages}{size}){blocked}")
        return (f"{self.claimed} vs {self.other}: {self.outcome} (d {d.mean:+.3g}, "
                f"{self.interval_name} [{lo:+.3g}, {hi:+.3g}]{size}){blocked}")

    @property
    def interval(self) -> tuple[float, float]:
        """The interval the decision used: each end at its Holm step's level (for `matches`,
        both ends at the level of the claim's test, TOST)."""
        d = self.difference
        if self.part.kind == "matches":
            return d.interval_at(self.level_for, self.level_for)
        return d.interval_at(self.level_for, self.level_against)

    @property
    def interval_name(self) -> str:
        adjusted = self.level_for < ALPHA or (self.level_against < ALPHA
                                             and self.part.kind != "matches")
        return "95% CI, Holm-adjusted," if adjusted else "95% CI"

    @property
    def detail(self) -> str:
        if self.difference is None:
            return f"{self.claimed} vs {self.other}: {self.outcome} — {self.reason}"
        d = self.difference
        lo, hi = self.interval
        seeds = (f"; per seed {', '.join(f'{x:+.4g}' for x in d.per_seed)}" if d.paired else "")
        if self.size is None:
            size = "the claim states no effect size"
        elif self.part.margin is not None:
            size = f"margin δ = {self.size[1]}"
        else:
            size = f"claimed effect {self.size[1]}"
        evidence = (f"two stages: {self.stages}; {d.design} over both" if self.stages else
                    f"{self.interval_name} [{lo:+.4g}, {hi:+.4g}] (one-sided levels "
                    f"{self.level_for:.3g} and {self.level_against:.3g}), {d.design}")
        text = (f"{self.metric}: {self.claimed} {self.means[0]:.4g}, {self.other} "
                f"{self.means[1]:.4g}; d = {d.mean:+.4g} in the claimed direction{seeds}; "
                f"{evidence}; {size}; p {self.p_for:.3g} for the claim, "
                f"{self.p_against:.3g} against it"
                + (f", {self.p_short:.3g} for an effect as large as claimed"
                   if self.p_short < 1 else "")
                + f" (one-sided, Holm-adjusted) → **{self.outcome}**")
        return text + (f": {self.reason}" if self.reason else "")


@dataclass
class Verdict:
    result: str  # one of OUTCOMES
    text: str  # the numbers it rests on, in one line
    details: list[str] = field(default_factory=list)  # one line per comparison

    @property
    def line(self) -> str:
        return f"Verdict: {self.result} — {self.text}"


def decide(table: Table, rows: list[Row], grids: dict | None = None,
           stages: Callable[[ClaimPart, list[Comparison]], None] | None = None) -> Verdict:
    """The verdict from the rows' chosen settings. `stages` (sweeps/sequential.py) replaces
    each comparison's raw one-sided p-values with a two-stage design's before Holm."""
    if not table.claim_parts:
        return Verdict("no claim", "the spec states no claim to test (an ablation or a smoke "
                                   "test): its rows are reported, not judged")
    comparisons = []
    for part in table.claim_parts:
        mine = compare_part(table, part, rows, grids or {})
        if stages is not None:
            stages(part, mine)
        for test in ("for", "against", "short"):
            raw = [getattr(c, f"p_{test}") for c in mine]
            for c, p, level in zip(mine, holm(raw), holm_levels(raw)):
                setattr(c, f"p_{test}", p)
                setattr(c, f"level_{test}", level)
        for c in mine:
            _outcome(table, part, c, rows, grids or {})
        comparisons += mine
    result = combine([c.outcome for c in comparisons])
    return Verdict(result, "; ".join(c.short for c in comparisons),
                   [("" if not c.part.label else f"[{c.part.label}] ") + c.detail
                    for c in comparisons])


def combine(outcomes: list[str]) -> str:
    if "failed" in outcomes:  # the experiment broke: nothing it says is about the method
        return "failed"
    if "not reproduced" in outcomes:
        return "not reproduced"
    if "smaller than claimed" in outcomes:  # the paper's effect is excluded: a result
        return "smaller than claimed"
    if outcomes and all(o == "reproduced" for o in outcomes):
        return "reproduced"
    return "underpowered" if "underpowered" in outcomes else "inconclusive"


# ---------------------------------------------------------------- the comparisons of a part


def compare_part(table: Table, part: ClaimPart, rows: list[Row], grids: dict) -> list:
    """The comparisons of one part of the claim, each with its difference and raw one-sided
    p-values, before Holm and before an outcome (sweeps/sequential.py reads them per stage)."""
    by_key = {r.key: r for r in rows if not r.key.ablation}
    metric = part.metric or table.metric
    out = []
    if part.kind == "average_rank":
        row, than = part.pairs[0]
        return [_rank_comparison(table, part, row.optim, other.optim, rows) for other in than]
    for row, than in part.pairs:
        for other in than:
            a, b = by_key.get(row), by_key.get(other)
            c = Comparison(part, row.base, other.base, metric.name)
            if a is None or b is None:
                c.reason = f"rows {row.base!r} and {other.base!r} did not both run"
            elif a.failed_everywhere or b.failed_everywhere:
                broken = [r for r in (a, b) if r.failed_everywhere]
                c.outcome = "failed"
                c.reason = "; ".join(f"{r.label}'s runs failed at every setting ({r.failed} "
                                     f"runs; first error: {r.first_error})" for r in broken)
            elif a.best is None or b.best is None:
                failed = [r.label for r in (a, b) if r.best is None]
                c.reason = f"{', '.join(failed)} diverged at every setting"
                if a.best is None and b.best is not None:
                    c.outcome, c.p_against = "not reproduced", 0.0
            elif part.kind == "sensitivity":
                _sensitivity(c, a, b)
            else:
                _difference(c, table, part, metric, a, b)
            out.append(c)
    return out


def _values(row: Row, metric: Metric, table: Table) -> list[float]:
    """The row's per-seed values at its chosen setting, of the table's metric or another key."""
    if metric.key == table.metric.key:
        return list(row.values)
    return [float(metric.of(r)) for r in row.best_runs]


def _difference(c: Comparison, table: Table, part: ClaimPart, metric: Metric, a: Row,
                b: Row) -> None:
    va, vb = _values(a, metric, table), _values(b, metric, table)
    extra = 0.0
    if part.binomial:  # the questions scored are a sample too
        for values, row in ((va, a), (vb, b)):
            questions = _mean_of(row, part.binomial)
            p = statistics.mean(values)
            if questions:
                extra += p * (1.0 - p) / (questions * len(values))
    d = difference(va, vb, a.chosen.seeds, b.chosen.seeds, metric.mode, extra,
                   metric.resolution or 0.0)
    c.minutes_a_seed = _minutes_a_seed([row.best_runs for row in (a, b)])
    c.difference, c.means = d, (statistics.mean(va), statistics.mean(vb))
    if part.margin is not None:
        delta = part.margin.of(c.means[1])
        c.size = (delta, part.margin.describe(c.means[1]))
        if part.kind == "matches_or_beats":
            c.p_for, c.p_against = d.p_above(-delta), d.p_below(-delta)
        else:  # matches: inside ±δ (both one-sided tests), or beyond one side
            c.p_for = max(d.p_above(-delta), d.p_below(delta))
            c.p_against = min(d.p_above(delta), d.p_below(-delta))
    else:
        _against_zero(c)


def _against_zero(c: Comparison) -> None:
    """The tests of a claim that the row is better (by the stated effect, if any)."""
    d = c.difference
    if c.part.effect is not None:
        c.size = (c.part.effect.of(c.means[1]), c.part.effect.describe(c.means[1]))
        c.p_short = d.p_below(c.size[0])
    c.p_for, c.p_against = d.p_above(0.0), d.p_below(0.0)


def _sensitivity(c: Comparison, a: Row, b: Row) -> None:
    lrs = sorted({cell.lr for cell in a.cells.values()} & {cell.lr for cell in b.cells.values()})
    sa, sb = lr_sensitivity(a, lrs), lr_sensitivity(b, lrs)
    seeds = sorted(set(sa) & set(sb))
    if len(seeds) < 2:
        c.reason = "fewer than two seeds finished at every lr both rows ran"
        return
    d = one_sample([sb[s] - sa[s] for s in seeds], seeds)
    c.metric = f"LR sensitivity over {len(lrs)} lrs ({lrs[0]:g}–{lrs[-1]:g})"
    c.difference = d
    # one more seed runs every lr of both rows, at the cells `lr_sensitivity` reads
    c.minutes_a_seed = _minutes_a_seed([cell.runs for row in (a, b)
                                        for cell in _cells_at(row, lrs)])
    c.means = (statistics.mean(sa[s] for s in seeds), statistics.mean(sb[s] for s in seeds))
    _against_zero(c)


def lr_sensitivity(row: Row, lrs: list[float]) -> dict[int, float]:
    """{seed: mean over `lrs` of min(ℓ(η), ℓ₀) − min_η ℓ(η)}, at the untuned setting of each lr
    (the first `tune` setting), for a metric that is minimized; a seed that diverged at some lr
    counts as its initial loss ℓ₀ there."""
    cells = _cells_at(row, lrs)
    out = {}
    for k, seed in enumerate(cells[0].seeds):
        capped = []
        for cell in cells:
            value, start = cell.values[k], cell.initial[k]
            start = start if start is not None and math.isfinite(start) else math.inf
            capped.append(min(value, start))
        if all(math.isfinite(x) for x in capped):
            out[seed] = statistics.mean(x - min(capped) for x in capped)
    return out


def _cells_at(row: Row, lrs: list[float]) -> list[Cell]:
    """The row's untuned setting (its first `tune` setting) at each of `lrs`."""
    return [next(c for c in row.cells.values() if c.lr == lr) for lr in lrs]


def _minutes_a_seed(run_lists: list) -> float | None:
    """Minutes one more seed costs: each list's mean run time, summed (None: a list without
    run times)."""
    times = [[x for r in runs if isinstance(x := r.get("wall_time_s"), (int, float))]
             for runs in run_lists]
    return sum(statistics.mean(t) for t in times) / 60.0 if times and all(times) else None


def ranks(values: dict[str, float], mode: str) -> dict[str, float]:
    """Rank 1 for the best value; ties share their mean rank; a missing value ranks last."""
    sign = 1.0 if mode == "min" else -1.0
    keyed = {k: sign * v if v is not None and math.isfinite(v) else math.inf
             for k, v in values.items()}
    ordered = sorted(keyed.values())
    return {k: statistics.mean(i + 1 for i, x in enumerate(ordered) if x == v)
            for k, v in keyed.items()}


def average_ranks(rows: list[Row], mode: str, seed: int | None = None) -> dict[str, float]:
    """Each optimizer's rank within each variant (by its mean at the chosen setting, or by one
    seed's value there), averaged over the variants."""
    per_optim: dict[str, list[float]] = {}
    for variant in dict.fromkeys(r.key.variant for r in rows if not r.key.ablation):
        mine = [r for r in rows if r.key.variant == variant and not r.key.ablation]
        if seed is None:
            values = {r.key.optim: r.mean for r in mine}
        else:
            values = {r.key.optim: _seed_value(r, seed) for r in mine}
        for optim, rank in ranks(values, mode).items():
            per_optim.setdefault(optim, []).append(rank)
    return {optim: statistics.mean(rs) for optim, rs in per_optim.items()}


def _seed_value(row: Row, seed: int) -> float | None:
    cell = row.chosen
    if cell is None or seed not in cell.seeds:
        return None
    return cell.values[cell.seeds.index(seed)]


def _rank_comparison(table: Table, part: ClaimPart, optim: str, other: str,
                     rows: list[Row]) -> Comparison:
    mode = table.metric.mode
    c = Comparison(part, optim, other, "average rank over the variants")
    seeds = sorted({s for r in rows if r.chosen for s in r.chosen.seeds})
    per_seed = {s: average_ranks(rows, mode, s) for s in seeds}
    diffs = [(s, per_seed[s][other] - per_seed[s][optim]) for s in seeds
             if optim in per_seed[s] and other in per_seed[s]]
    if len(diffs) < 2:
        c.reason = f"{optim} and {other} did not both run with two seeds"
        return c
    overall = average_ranks(rows, mode)
    variants = len({r.key.variant for r in rows if not r.key.ablation})
    # a rank difference averaged over V variants moves in steps of 1/V
    c.difference = one_sample([d for _, d in diffs], [s for s, _ in diffs], 1.0 / variants)
    c.means = (overall.get(optim, math.nan), overall.get(other, math.nan))
    _against_zero(c)
    return c


# ---------------------------------------------------------------- the outcome of a comparison


def _outcome(table: Table, part: ClaimPart, c: Comparison, rows: list[Row],
             grids: dict) -> None:
    if c.difference is None:
        return  # decided (or not) by what ran
    d = c.difference
    if c.p_for < ALPHA:
        c.outcome = "reproduced"
    elif c.p_against < ALPHA:
        c.outcome = "not reproduced"
    elif c.p_short < ALPHA:
        hi = d.interval_at(upper=c.level_short)[1]
        c.outcome, c.reason = "smaller than claimed", (
            f"the upper end {hi:+.3g} (at its Holm level) lies below the claimed effect "
            f"{c.size[0]:.3g}: an effect as large as the paper's is excluded")
    else:
        _undecided(part, c)
        if c.unfunded:  # its interval is stage 1's; the design cannot decide it from there
            c.reason = (f"its stage 2 ran no seeds (the plan gave them to other comparisons), and "
                        f"stage 1 alone decides only below α₁; {c.reason}")
        return
    if part.kind in ("sensitivity", "average_rank"):
        return  # over the whole grid: no chosen lr to sit on an edge
    by_label = {r.key.base: r for r in rows if not r.key.ablation}
    claimed, other = by_label[c.claimed], by_label[c.other]
    on_edge = {r.key.base: edges.edge(r, grids[r.label]) for r in (claimed, other)
               if r.label in grids and edges.edge(r, grids[r.label])}
    equal_kind = part.kind in ("matches", "matches_or_beats")
    if c.outcome == "reproduced":
        blocking = [k for k in on_edge if equal_kind or k == c.other]
        if blocking:
            c.outcome, c.reason = "inconclusive", (
                f"the best lr of {', '.join(blocking)} is on the "
                f"{'/'.join(on_edge[k] for k in blocking)} edge of its grid: it may be "
                f"under-tuned, so the comparison is not a result")
        elif equal_kind and table.metric.ceiling is not None and part.metric is None:
            near = _saturated(table.metric, c, (claimed, other))
            if near:
                c.outcome, c.reason = "inconclusive", near
    elif c.outcome in ("not reproduced", "smaller than claimed") and c.claimed in on_edge:
        c.outcome, c.reason = "inconclusive", (
            f"the best lr of {c.claimed} is on the {on_edge[c.claimed]} edge of its grid: it "
            f"may be under-tuned, so losing is not a result")


@dataclass(frozen=True)
class Target:
    """What a comparison's test must detect, and that test's power with n seeds a row at the
    spread observed (`power(None)`: with the seeds it has)."""

    what: str
    power: Callable[[int | None], float]


def target(part: ClaimPart, c: Comparison, level_for: float, level_against: float) -> Target:
    """The difference a comparison's test must detect, by the test that difference would pass
    at the given one-sided levels. For `better` with an effect, the claimed effect (the test of
    d > 0). For a margin, the difference observed: the claim's test (above −δ; inside ±δ by
    TOST) or, observed beyond the margin, the test against it. With no effect stated, the
    difference observed, by the test it points to (for the claim, or against it)."""
    d = c.difference
    if c.size is None:
        upper = d.mean > 0
        return Target(f"the difference observed ({d.mean:+.3g})",
                      lambda n=None: d.power(d.mean, 0.0, upper,
                                             level_for if upper else level_against, n))
    size, observed = c.size[0], d.mean
    if part.kind == "matches" and abs(observed) < size:
        return Target(f"the difference observed ({observed:+.3g}), by TOST within "
                      f"±{size:.3g}", lambda n=None: d.power_inside(observed, size, level_for, n))
    if part.kind in ("matches", "matches_or_beats"):
        beyond = part.kind == "matches" and observed >= size  # else the test of −δ
        boundary = size if beyond else -size
        upper = beyond or observed > -size
        level = level_for if (upper and observed > -size and not beyond) else level_against
        side = "above" if upper else "below"
        return Target(f"the difference observed ({observed:+.3g}), {side} {boundary:+.3g}",
                      lambda n=None: d.power(observed, boundary, upper, level, n))
    return Target(f"the claimed effect {size:.3g}",
                  lambda n=None: d.power(size, 0.0, True, level_for, n))


def _undecided(part: ClaimPart, c: Comparison) -> None:
    """Underpowered or inconclusive, by the power of the test made at the difference it must
    detect (`target`), with the seeds a row that would give it 80%."""
    d = c.difference
    aim = target(part, c, c.level_for, c.level_against)
    if c.size is None:  # no effect to lack power for: what the difference observed would take
        needed = d.seeds_needed(aim.power) if d.mean != 0 else None
        whole = " over the whole lr grid" if part.kind in ("sensitivity", "average_rank") else ""
        cost = (f" (about {needed * c.minutes_a_seed:.0f} min of run time)"
                if needed and c.minutes_a_seed else "")
        c.outcome, c.reason = "inconclusive", (
            f"{INSIDE}; the claim states no effect size; to decide the difference observed "
            f"({d.mean:+.3g}) " + (f"{needed} seeds a row{whole} would give 80% power{cost}"
                                   if needed else "more than 200 seeds a row would be needed"))
        return
    now = aim.power(None)
    if now >= POWER:
        c.outcome, c.reason = "inconclusive", (
            f"{INSIDE}; the test had {100 * now:.0f}% power at {aim.what}")
        return
    c.outcome, c.needed = "underpowered", d.seeds_needed(aim.power)
    cost = (f" (about {c.needed * c.minutes_a_seed:.0f} min of run time for the two rows at "
            f"this scale)" if c.needed and c.minutes_a_seed else "")
    c.reason = (f"the test has {100 * now:.0f}% power at {aim.what} with {d.n} seeds; "
                + (f"{c.needed} seeds a row would give it {100 * POWER:.0f}% at the spread "
                   f"observed{cost}" if c.needed else "no number of seeds up to 200 would give "
                   f"it {100 * POWER:.0f}% at the spread observed"))


def _saturated(metric: Metric, c: Comparison, rows: tuple[Row, Row]) -> str:
    """Why two rows are equal by construction, or "": both within the margin or their own
    noise of the metric's ceiling."""
    room = []
    for row in rows:
        values = row.values
        noise = (Difference(0.0, statistics.stdev(values) / math.sqrt(len(values)),
                            len(values) - 1, len(values), True).half_width
                 if len(values) > 1 else 0.0)
        gap = abs(metric.ceiling - statistics.mean(values))
        if gap > max(noise, c.size[0] if c.size else 0.0):
            return ""
        room.append(f"{row.key.base} {gap:.3g} below")
    return (f"both rows sit within the margin or their own noise of the ceiling "
            f"{metric.ceiling:g} ({'; '.join(room)}): equal by construction, not a result")


def _mean_of(row: Row, key: str) -> float | None:
    """The mean of a summary key over the row's runs at its chosen setting."""
    xs = [r.get(key) for r in row.best_runs]
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.mean(xs) if xs else None

