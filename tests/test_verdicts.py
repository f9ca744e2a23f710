"""The edge rule that widens an lr grid, the verdict rule (paired t intervals, margins, power,
Holm, edges and ceilings), and the one spike definition the tables and figures share.

Every interval and p-value is checked against scipy.stats' own t-tests on the same numbers."""

import math
import random

import pytest
from scipy import stats as scipy_stats

from sweeps import edges, verdict
from sweeps.collect import Cell, Row
from sweeps.records import RunRecord
from sweeps.spec import Amount, ClaimPart, Metric, RowKey, Table
from sweeps.stats import difference, holm, holm_levels
from tasks.train.metrics import LossTracker, SpikeConfig

# per-seed values (seeds 0, 1, 2) that move together: paired, the rows differ clearly; unpaired,
# the seed-to-seed spread (0.1) swamps the difference (0.05)
A = [1.00, 1.10, 0.90]
B = [1.05, 1.16, 0.94]


def row(label, values=None, best_lr=1e-3, seeds=None, cells=None, initial=None, summary=None,
        variant=""):
    """A collected row: `values` per seed at `best_lr` (or `cells`: {lr: seed values}, ±inf for
    a diverged seed, with `initial` losses per lr); None for a row that diverged everywhere."""
    r = Row(RowKey(label, variant))
    if cells is None:
        cells = {best_lr: values} if values is not None else {1e-3: [math.inf] * 3}
    for lr, vals in cells.items():
        runs = [RunRecord(label, (), {"status": "completed", **(summary or {}), "initial": {
            "train_loss": (initial or {}).get(lr, [None] * 9)[k]}}, ()) for k in range(len(vals))]
        r.cells[(lr, ())] = Cell(lr, (), list(seeds or range(len(vals))), runs, list(vals))
    finished = [s for s, c in r.cells.items() if c.mean is not None]
    r.best = (best_lr, ()) if (best_lr, ()) in finished else None
    return r


def part(kind="better", row="s3", than="adamw", margin=None, effect=None, binomial=None,
         metric=None):
    than = than if isinstance(than, list) else [than]
    return ClaimPart(kind, ((RowKey(row), tuple(RowKey(t) for t in than)),), binomial,
                     Amount(margin, "test") if margin else None,
                     Amount(effect, "test") if effect else None, metric)


def table_for(*parts, key="final.val_loss", mode="min", ceiling=None):
    """A table holding only what a verdict is decided on."""
    return Table(name="t", title="t", claim="c", scale="tiny", scale_label="", overrides=(),
                 per_optimizer={}, optimizers={}, variants={"": ()}, lr_multipliers=(),
                 seeds=(0, 1, 2), metric=Metric(key, mode, "", ceiling), report=(), ratios=(),
                 paper={}, figures=(), extend_edges=0, claim_parts=parts, untested="",
                 regime="", average_rank=False, sources={})


def test_a_best_lr_on_an_edge_adds_the_next_lr_at_the_grids_factor():
    grids = {"a": [1e-3, 3e-3, 1e-2], "b": [1e-3, 3e-3, 1e-2], "c": [1e-3, 3e-3, 1e-2],
             "d": [0.1]}
    rows = [row("a", A, 1e-3), row("b", A, 1e-2), row("c", A, 3e-3), row("d", A, 0.1),
            row("e")]  # e: diverged everywhere, at a fixed lr multiple (not in the grids)
    wider = edges.extend(rows, grids)
    assert wider["a"] == [pytest.approx(3.33e-4), 1e-3, 3e-3, 1e-2]
    assert wider["b"] == [1e-3, 3e-3, 1e-2, pytest.approx(3.33e-2)]
    assert wider["c"] == grids["c"] and wider["d"] == [0.1] and "e" not in wider
    # diverged at every lr: reach down
    assert edges.extend([row("a")], grids)["a"][0] == pytest.approx(3.33e-4)
    assert edges.added(grids["a"], wider["a"]) == [pytest.approx(3.33e-4)]
    assert edges.beyond([1e-3, 1e-2], "high") == 0.1


def test_rows_that_share_seeds_are_compared_seed_by_seed():
    paired = difference(A, B, [0, 1, 2], [0, 1, 2], "min")
    reference = scipy_stats.ttest_rel(B, A)  # lower is better: d = b − a
    assert paired.paired and paired.per_seed == pytest.approx([0.05, 0.06, 0.04])
    assert paired.interval == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert paired.p_above(0.0) == pytest.approx(scipy_stats.ttest_rel(
        B, A, alternative="greater").pvalue)
    # other seeds: no pairing, Welch's interval, far wider here
    welch = difference(A, B, [0, 1, 2], [3, 4, 5], "min")
    reference = scipy_stats.ttest_ind(B, A, equal_var=False)
    assert not welch.paired
    assert welch.interval == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert welch.half_width > 5 * paired.half_width


def test_better_is_decided_by_the_interval_paired_by_seed():
    claim = table_for(part("better"))
    won = verdict.decide(claim, [row("s3", A), row("adamw", B)])
    assert won.result == "reproduced" and "paired by seed (0, 1, 2)" in won.details[0]
    assert "per seed +0.05, +0.06, +0.04" in won.details[0]
    lost = verdict.decide(claim, [row("s3", B), row("adamw", A)])
    assert lost.result == "not reproduced"
    # the same values on other seeds: Welch, and the difference is within the noise
    unpaired = verdict.decide(claim, [row("s3", A), row("adamw", B, seeds=[3, 4, 5])])
    assert unpaired.result == "inconclusive" and "Welch" in unpaired.details[0]
    assert "fewer than" not in unpaired.text
    diverged = verdict.decide(claim, [row("s3"), row("adamw", A)])
    assert diverged.result == "not reproduced" and "diverged at every setting" in diverged.text


def test_a_claimed_effect_the_test_has_no_power_for_is_underpowered_and_says_the_seeds():
    noisy = [1.0, 1.3, 0.8]
    rows = [row("s3", noisy), row("adamw", [1.02, 1.25, 0.85])]  # d +0.0067, sd 0.051
    small = verdict.decide(table_for(part("better", effect=0.05)), rows)
    assert small.result == "underpowered"
    assert "power at the claimed effect 0.05 with 3 seeds" in small.details[0]
    needed = int(small.details[0].split(" seeds a row would")[0].split()[-1])
    assert f"{needed} seeds a row for 80% power" in small.text
    # what statsmodels is asked, done by hand: the noncentral t of the paired test
    d = difference(noisy, [1.02, 1.25, 0.85], [0, 1, 2], [0, 1, 2], "min")

    def power(n):
        crit = scipy_stats.t.ppf(0.975, n - 1)
        return scipy_stats.nct.sf(crit, n - 1, 0.05 / (d.spread / math.sqrt(n)))
    assert power(needed) >= 0.8 > power(needed - 1)
    tiny = verdict.decide(table_for(part("better", effect=0.001)), rows)
    assert "no number of seeds up to 200" in tiny.details[0]
    none = verdict.decide(table_for(part("better")), rows)
    assert none.result == "inconclusive" and "states no effect size" in none.details[0]
    assert "more than 200 seeds a row would be needed" in none.details[0]
    timed = {"wall_time_s": 60.0}
    closer = [row("s3", [0.95, 1.3, 0.76], summary=timed),
              row("adamw", [1.02, 1.25, 0.85], summary=timed)]  # d +0.037, sd 0.06
    v = verdict.decide(table_for(part("better")), closer)
    seeds = int(v.details[0].split(" seeds a row would give 80% power")[0].split()[-1])
    assert f"{seeds} seeds a row would give 80% power (about {2 * seeds} min" in v.details[0]


def test_an_interval_below_the_claimed_effect_is_smaller_than_claimed():
    rows = [row("s3", [1.0, 1.3, 0.8]), row("adamw", [1.02, 1.25, 0.85])]  # CI [-0.12, +0.13]
    v = verdict.decide(table_for(part("better", effect=5.0)), rows)
    assert v.result == "smaller than claimed"
    assert "lies below the claimed effect 5" in v.details[0]
    # a design with power at the effect that decides nothing is inconclusive
    # (8 seeds: with 3, t's 2 df make 80% power and an interval holding 0 and E exclusive)
    gains = [0.28 + x for x in [0.5, -0.5] * 4]  # d = 0.28, CI [-0.167, +0.727]
    rows = [row("s3", [1.0 - g for g in gains]), row("adamw", [1.0] * 8)]
    v = verdict.decide(table_for(part("better", effect=0.7)), rows)
    assert v.result == "inconclusive" and "89% power at the claimed effect 0.7" in v.details[0]
    assert verdict.decide(table_for(part("better", effect=0.6)), rows).result == "underpowered"


def test_power_is_of_the_test_made_non_inferiority_at_the_difference_observed():
    # s3 better by 0.3 (sd 0.125): non-inferiority by δ = 0.03 needs a few seeds, not ~80
    gains = [0.2, 0.3, 0.45]
    d = difference([1.0 - g for g in gains], [1.0] * 3, [0, 1, 2], [0, 1, 2], "min")
    n = d.seeds_needed(lambda k: d.power(d.mean, -0.03, True, n=k))
    assert 3 <= n <= 6
    assert d.power(d.mean, -0.03, True, n=n) == pytest.approx(scipy_stats.nct.sf(
        scipy_stats.t.ppf(0.975, n - 1), n - 1, (d.mean + 0.03) / (d.spread / math.sqrt(n))))
    # equivalence by TOST needs more: both boundaries must be passed
    equal = difference([1.0, 1.1, 0.9], [1.01, 1.08, 0.92], [0, 1, 2], [0, 1, 2], "min")
    tost = equal.seeds_needed(lambda k: equal.power_inside(equal.mean, 0.03, n=k))
    one_side = equal.seeds_needed(lambda k: equal.power(equal.mean, -0.03, True, n=k))
    assert tost > one_side
    assert equal.power_inside(equal.mean, 0.03, n=tost) == pytest.approx(
        equal.power(equal.mean, -0.03, True, n=tost)
        + equal.power(equal.mean, 0.03, False, n=tost) - 1)


def test_a_discrete_metric_cannot_give_an_interval_of_zero_width():
    # every seed differs by exactly 8 of 1,000 items
    a, b = [0.508, 0.611, 0.702], [0.500, 0.603, 0.694]
    plain = difference(a, b, [0, 1, 2], [0, 1, 2], "max")
    assert plain.half_width == pytest.approx(0.0, abs=1e-9)
    counted = difference(a, b, [0, 1, 2], [0, 1, 2], "max", resolution=1e-3)
    assert counted.spread == pytest.approx(math.sqrt(plain.spread ** 2 + 2 * 1e-6 / 12))
    assert counted.half_width > 1e-4
    rank = verdict.one_sample([1.0, 1.0, 1.0], [0, 1, 2], resolution=0.5)
    assert rank.half_width > 0


def test_matches_or_beats_needs_its_lower_end_above_minus_the_margin():
    rows = [row("s3", B), row("adamw", A)]  # s3 worse by 0.05, 95% CI [-0.075, -0.025]
    assert verdict.decide(table_for(part("matches_or_beats", margin=0.1)), rows).result == \
        "reproduced"
    assert verdict.decide(table_for(part("matches_or_beats", margin=0.01)), rows).result == \
        "not reproduced"  # worse by more than the margin, beyond the noise
    noisy = [row("s3", [1.0, 1.3, 0.8]), row("adamw", [1.02, 1.25, 0.85])]
    v = verdict.decide(table_for(part("matches_or_beats", margin=0.01)), noisy)
    assert v.result == "underpowered" and "margin δ = 0.01" in v.details[0]


def test_matches_needs_the_interval_inside_plus_minus_the_margin():
    flat = [row("s3", [1.01, 1.10, 0.91]), row("adamw", A)]
    assert verdict.decide(table_for(part("matches", margin=0.05)), flat).result == "reproduced"
    better = [row("s3", [0.9, 1.0, 0.8]), row("adamw", A)]  # better by 0.1: not flat either
    assert verdict.decide(table_for(part("matches", margin=0.05)), better).result == \
        "not reproduced"


def test_holm_levels_reject_exactly_what_holm_adjusted_p_values_do():
    rng = random.Random(0)
    for _ in range(500):
        ps = [rng.random() ** 3 * 0.1 for _ in range(rng.randint(1, 5))]
        assert [p < level for p, level in zip(ps, holm_levels(ps))] == \
            [p < 0.025 for p in holm(ps)]


def test_several_rows_are_holm_adjusted():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # one comparison alone is decided; with two more it no longer is
    adamw = [1.02, 1.13, 0.94]  # worse than s3 by 0.02, 0.03, 0.04: p ≈ 0.018
    rows = [row("s3", A), row("adamw", adamw), row("x", [1.0, 1.3, 1.05]),
            row("y", [1.0, 1.3, 1.05])]  # x, y: worse, but within their noise
    alone = verdict.decide(table_for(part("better", than="adamw")), rows)
    p = scipy_stats.ttest_rel(adamw, A, alternative="greater").pvalue
    assert alone.result == "reproduced" and p < 0.025 < 3 * p
    together = verdict.decide(table_for(part("better", than=["adamw", "x", "y"])), rows)
    assert together.result == "inconclusive"


def test_a_best_lr_on_an_edge_or_a_ceiling_cannot_make_a_claim_hold():
    grids = {"s3": [1e-3, 3e-3], "adamw": [1e-3, 3e-3]}
    rows = [row("s3", A, 3e-3, cells={1e-3: [2.0] * 3, 3e-3: A}),
            row("adamw", B, 3e-3, cells={1e-3: [2.0] * 3, 3e-3: B})]
    v = verdict.decide(table_for(part("better")), rows, grids)
    assert v.result == "inconclusive" and "adamw is on the high edge" in v.details[0]
    # accuracies at the ceiling: equal by construction, not a result
    top = [row("s3", [0.999, 1.0, 0.998]), row("adamw", [0.998, 1.0, 0.999])]
    claim = table_for(part("matches_or_beats", margin=0.01), key="final.acc", mode="max",
                      ceiling=1.0)
    v = verdict.decide(claim, top)
    assert v.result == "inconclusive" and "ceiling 1" in v.details[0]
    low = [row("s3", [0.5, 0.52, 0.51]), row("adamw", [0.5, 0.52, 0.505])]
    assert verdict.decide(claim, low).result == "reproduced"


def test_only_the_claimed_rows_edge_keeps_a_loss_from_being_not_reproduced():
    """Losing is no result when the claimed row may be under-tuned (its best lr on an edge);
    when only the row it is compared with sits on an edge, the loss stands."""
    grids = {"s3": [1e-3, 2e-3, 3e-3], "adamw": [1e-3, 2e-3, 3e-3]}
    worse = [2.0] * 3

    def tuned(label, values, best):
        return row(label, values, best, cells={lr: values if lr == best else worse
                                                for lr in grids[label]})

    claimed_on_edge = [tuned("s3", B, 3e-3), tuned("adamw", A, 2e-3)]
    v = verdict.decide(table_for(part("better")), claimed_on_edge, grids)
    assert v.result == "inconclusive" and "the best lr of s3 is on the high edge" in \
        v.details[0] and "losing is not a result" in v.details[0]
    other_on_edge = [tuned("s3", B, 2e-3), tuned("adamw", A, 3e-3)]
    assert verdict.decide(table_for(part("better")), other_on_edge, grids).result == \
        "not reproduced"
    inside = [tuned("s3", B, 2e-3), tuned("adamw", A, 2e-3)]
    assert verdict.decide(table_for(part("better")), inside, grids).result == "not reproduced"


def test_an_accuracy_verdict_adds_the_binomial_error():
    claim = table_for(part("better", binomial="final.questions"), key="final.acc", mode="max")
    few, many = {"final": {"questions": 50}}, {"final": {"questions": 100000}}
    accuracies = ([0.60, 0.62, 0.61], [0.57, 0.59, 0.575])
    assert verdict.decide(claim, [row("s3", accuracies[0], summary=few),
                                  row("adamw", accuracies[1], summary=few)]).result == \
        "inconclusive"  # 50 questions: a 3-point gap is within the binomial error
    assert verdict.decide(claim, [row("s3", accuracies[0], summary=many),
                                  row("adamw", accuracies[1], summary=many)]).result == \
        "reproduced"


def test_a_part_can_be_decided_on_another_summary_key():
    cost = Metric("optimizer_step_s", "min", "step time")
    rows = [row("s3", A, summary={"optimizer_step_s": 0.2}),
            row("adamw", A, summary={"optimizer_step_s": 0.1})]
    for r, times in zip(rows, ([0.20, 0.21, 0.19], [0.10, 0.11, 0.10])):
        for run, t in zip(r.best_runs, times):
            run.summary["optimizer_step_s"] = t
    v = verdict.decide(table_for(part("better", metric=cost)), rows)
    assert v.result == "not reproduced" and v.details[0].startswith("step time: s3 0.2")


def test_no_claim_is_no_verdict():
    v = verdict.decide(table_for(), [row("s3", A)])
    assert v.result == "no claim"


def test_lr_sensitivity_as_wortsman_et_al_define_it():
    lrs = [1e-3, 1e-2, 1e-1]
    # per seed: final losses at the three lrs; the third diverged for the baseline (inf),
    # which counts as the initial loss 5.0
    stable = {lr: [v, v + 0.01, v - 0.01] for lr, v in zip(lrs, (2.0, 1.8, 2.2))}
    spiky = {lr: [v, v, v] for lr, v in zip(lrs, (2.0, 1.8, math.inf))}
    initial = {lr: [5.0, 5.0, 5.0] for lr in lrs}
    a = row("s3", best_lr=1e-2, cells=stable, initial=initial)
    b = row("adamw", best_lr=1e-2, cells=spiky, initial=initial)
    assert verdict.lr_sensitivity(a, lrs)[0] == pytest.approx((0.2 + 0.0 + 0.4) / 3)
    assert verdict.lr_sensitivity(b, lrs)[0] == pytest.approx((0.2 + 0.0 + 3.2) / 3)
    v = verdict.decide(table_for(part("sensitivity")), [a, b])
    assert v.result == "reproduced" and "LR sensitivity over 3 lrs (0.001–0.1)" in v.details[0]
    # undecided, it says what a seed more costs: every lr of both rows (30 s a run here)
    close = {lr: [v + 0.05, v + 0.3, v - 0.2] for lr, v in zip(lrs, (2.0, 1.8, 2.2))}
    timed = {"wall_time_s": 30.0}
    c = row("adamw", best_lr=1e-2, cells=close, initial=initial, summary=timed)
    [comparison] = verdict.compare_part(table_for(part("sensitivity")), part("sensitivity"),
                                        [row("s3", best_lr=1e-2, cells=stable,
                                             initial=initial, summary=timed), c], {})
    assert comparison.minutes_a_seed == pytest.approx(6 * 0.5)


def test_figures_mark_the_spike_events_the_table_counts():
    from sweeps.figures import spike_marks

    tracker = LossTracker(SpikeConfig(warmup=3))
    losses = [3.0] * 10 + [9.0, 9.5] + [3.0] * 10 + [8.0] + [3.0] * 5
    for t, loss in enumerate(losses):
        tracker.update(t, loss)
    summary = tracker.summary()
    assert summary["spike_count"] == 2 and summary["spike_event_starts"] == [10, 22]
    # resumed mid-run, the tracker goes on with the same events
    resumed = LossTracker(SpikeConfig(warmup=3))
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.summary()["spike_event_starts"] == [10, 22]
    record = RunRecord("s3", (), {"status": "completed", "spikes": summary}, ())
    steps = list(range(0, len(losses), 2))  # logged every other step
    xs, ys = spike_marks(record, steps, [losses[s] for s in steps])
    assert xs == [10, 22] and ys == [9.0, 8.0]


def test_average_rank_over_variants_per_seed():
    def ranked(optim, variant, values):
        return row(optim, values, variant=variant)

    # higher is better; softsignum first on dataset a, adamw first on b (by the mean)
    rows = [ranked("softsignum", "a", [0.9, 0.91, 0.92]), ranked("adamw", "a", [0.8, 0.82, 0.81]),
            ranked("signum", "a", [0.7, 0.7, 0.7]), ranked("softsignum", "b", [0.6, 0.62, 0.6]),
            ranked("adamw", "b", [0.7, 0.5, 0.65]), ranked("signum", "b", [0.3, 0.3, 0.3])]
    assert verdict.average_ranks(rows, "max") == {"softsignum": 1.5, "adamw": 1.5,
                                                  "signum": 3.0}
    assert verdict.ranks({"x": 1.0, "y": 1.0, "z": None}, "max") == {"x": 1.5, "y": 1.5,
                                                                     "z": 3.0}
    beats = verdict.decide(table_for(part("average_rank", "softsignum", "signum"),
                                     key="final.test_accuracy", mode="max"), rows)
    assert beats.result == "reproduced"  # 1 vs 3 on a, 2 vs 3 on b, on every seed
    v = verdict.decide(table_for(part("average_rank", "softsignum", "adamw"),
                                 key="final.test_accuracy", mode="max"), rows)
    assert v.result == "inconclusive" and "softsignum 1.5, adamw 1.5" in v.details[0]


def test_a_margin_observed_beyond_is_powered_for_the_test_against_the_claim():
    # s3 worse by 0.05 ± noise: non-inferiority by δ = 0.01 would not show; losing would
    worse = [0.04, 0.1, 0.01]
    rows = [row("s3", [1.0 + w for w in worse]), row("adamw", [1.0] * 3)]
    v = verdict.decide(table_for(part("matches_or_beats", margin=0.01)), rows)
    assert v.result == "underpowered" and "below -0.01" in v.details[0]
    d = difference([1.0 + w for w in worse], [1.0] * 3, [0, 1, 2], [0, 1, 2], "min")
    needed = int(v.details[0].split(" seeds a row would")[0].split()[-1])
    assert needed == d.seeds_needed(lambda n: d.power(d.mean, -0.01, False, n=n))
    # better by more than the margin: `matches` fails above +δ
    rows = [row("s3", [1.0 - w for w in worse]), row("adamw", [1.0] * 3)]
    v = verdict.decide(table_for(part("matches", margin=0.01)), rows)
    assert v.result == "underpowered" and "above +0.01" in v.details[0]


def test_a_spread_of_rounding_error_has_the_power_of_a_certain_test():
    """Seed-wise differences equal up to float rounding (se ~1e-17): statsmodels' noncentral t
    underflows to nan there, and nan would read as no power at all."""
    from sweeps.stats import difference

    d = difference([1.0, 1.3, 0.8], [1.1, 1.4, 0.9], [0, 1, 2], [0, 1, 2], "min")
    assert 0 < d.se < 1e-15
    assert d.power(0.05, 0.0, True, 0.0125, 3) == 1.0
    assert d.power(0.05, 0.0, False, 0.0125, 3) == 0.0
    assert d.seeds_needed(lambda n: d.power(0.05, 0.0, True, 0.0125, n)) == 2
