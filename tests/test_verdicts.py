"""The edge rule that widens an lr grid, the verdict rule, and the one spike definition the
tables and figures share."""

import math

import pytest

from sweeps import edges, verdict
from sweeps.collect import Cell, Row
from sweeps.records import RunRecord
from sweeps.spec import Metric, RowKey, Table, VerdictSpec
from tasks.train.metrics import LossTracker, SpikeConfig


def spread(mean, std, n):
    """n seed values with this mean and (sample) standard deviation."""
    if n == 1:
        return [mean]
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = math.sqrt(sum(x * x for x in z) / (n - 1))
    return [mean + std * x / scale for x in z]


def row(label, best_lr, mean=1.0, std=0.0, n=3, cells=None, initial=None, summary=None,
        variant=""):
    """A collected row: at `best_lr`, n seeds with this mean and std (or `cells`: {lr: seed
    values}, ±inf for a diverged seed, with `initial` losses per lr)."""
    r = Row(RowKey(label, variant))
    cells = cells or ({best_lr: spread(mean, std, n)} if mean is not None else
                      {1e-3: [math.inf] * n})
    for lr, values in cells.items():
        runs = [RunRecord(label, (), {"status": "completed", **(summary or {}),
                                      "initial": {"train_loss": (initial or {}).get(lr, [None] * 9)
                                                  [k]}}, ()) for k in range(len(values))]
        r.cells[(lr, ())] = Cell(lr, (), list(range(len(values))), runs, list(values))
    finished = [s for s, c in r.cells.items() if c.mean is not None]
    r.best = (best_lr, ()) if best_lr is not None and (best_lr, ()) in finished else None
    return r


def table_for(verdict_, key="final.val_loss", mode="min"):
    """A table holding only what a verdict is decided on."""
    def keys(labels):
        return tuple(RowKey(*label.split(" ", 1)) for label in
                     (labels if isinstance(labels, list) else [labels]))

    spec = VerdictSpec(verdict_.get("kind", "better"),
                       tuple((r, keys(verdict_["than"])) for r in keys(verdict_["row"])),
                       verdict_.get("binomial"))
    return Table(name="t", title="t", claim="c", scale="tiny", scale_label="", overrides=(),
                 per_optimizer={}, optimizers={}, variants={"": ()}, lr_multipliers=(),
                 seeds=(0, 1, 2), metric=Metric(key, mode), report=(), ratios=(), paper={},
                 figures=(), extend_edges=0, verdict=spec, regime="", average_rank=False,
                 sources={})


def test_a_best_lr_on_an_edge_adds_the_next_lr_at_the_grids_factor():
    grids = {"a": [1e-3, 3e-3, 1e-2], "b": [1e-3, 3e-3, 1e-2], "c": [1e-3, 3e-3, 1e-2],
             "d": [0.1]}
    rows = [row("a", 1e-3), row("b", 1e-2), row("c", 3e-3), row("d", 0.1),
            row("e", None, None)]  # e: fixed lr multiple, not in the grids
    wider = edges.extend(rows, grids)
    assert wider["a"] == [pytest.approx(3.33e-4), 1e-3, 3e-3, 1e-2]
    assert wider["b"] == [1e-3, 3e-3, 1e-2, pytest.approx(3.33e-2)]
    assert wider["c"] == grids["c"] and wider["d"] == [0.1] and "e" not in wider
    # diverged at every lr: reach down
    assert edges.extend([row("a", None, None)], grids)["a"][0] == pytest.approx(3.33e-4)
    assert edges.added(grids["a"], wider["a"]) == [pytest.approx(3.33e-4)]
    assert edges.beyond([1e-3, 1e-2], "high") == 0.1


def test_better_verdict_by_two_standard_errors_over_seeds():
    spec = table_for({"kind": "better", "row": "s3", "than": "adamw"})
    won = verdict.decide(spec, [row("s3", 1e-3, 1.0, 0.1, 3),
                                        row("adamw", 1e-3, 1.5, 0.1, 3)])
    assert won.result == "reproduced" and "better by 0.5" in won.text
    # se = sqrt(0.1²/3·2) ≈ 0.082: a 0.1 gap is within 2·se
    tie = verdict.decide(spec, [row("s3", 1e-3, 1.0, 0.1, 3),
                                        row("adamw", 1e-3, 1.1, 0.1, 3)])
    assert tie.result == "inconclusive" and "within the noise" in tie.text
    lost = verdict.decide(spec, [row("s3", 1e-3, 1.5, 0.1, 3),
                                         row("adamw", 1e-3, 1.0, 0.1, 3)])
    assert lost.result == "not reproduced"
    few = verdict.decide(spec, [row("s3", 1e-3, 1.0, 0.1, 2),
                                        row("adamw", 1e-3, 9.0, 0.1, 2)])
    assert few.result == "inconclusive" and "fewer than 3 seeds" in few.text
    diverged = verdict.decide(spec, [row("s3", None, None, None, 3),
                                             row("adamw", 1e-3, 1.0, 0.1, 3)])
    assert diverged.result == "not reproduced"


def test_an_accuracy_verdict_adds_the_binomial_error():
    spec = table_for({"row": "s3", "than": "adamw", "binomial": "final.questions"},
                     "final.acc", "max")
    # the same seed spread; 100 questions: a 0.07 gap is noise, 100,000: it is not
    few, many = {"final": {"questions": 100}}, {"final": {"questions": 100000}}
    rows = [row("s3", 1e-3, 0.57, 0.01, 3, summary=few),
            row("adamw", 1e-3, 0.5, 0.01, 3, summary=few)]
    assert verdict.decide(spec, rows).result == "inconclusive"
    rows = [row("s3", 1e-3, 0.57, 0.01, 3, summary=many),
            row("adamw", 1e-3, 0.5, 0.01, 3, summary=many)]
    assert verdict.decide(spec, rows).result == "reproduced"


def test_lr_sensitivity_as_wortsman_et_al_define_it():
    lrs = [1e-3, 1e-2, 1e-1]
    # per seed: final losses at the three lrs; the third diverged for the baseline (inf),
    # which counts as the initial loss 5.0
    stable = {lr: [v, v + 0.01, v - 0.01] for lr, v in zip(lrs, (2.0, 1.8, 2.2))}
    spiky = {lr: [v, v, v] for lr, v in zip(lrs, (2.0, 1.8, math.inf))}
    initial = {lr: [5.0, 5.0, 5.0] for lr in lrs}
    a = row("s3", 1e-2, cells=stable, initial=initial)
    b = row("adamw", 1e-2, cells=spiky, initial=initial)
    assert verdict.lr_sensitivity(a, lrs)[0] == pytest.approx((0.2 + 0.0 + 0.4) / 3)
    assert verdict.lr_sensitivity(b, lrs)[0] == pytest.approx((0.2 + 0.0 + 3.2) / 3)
    spec = table_for({"kind": "sensitivity", "row": "s3", "than": "adamw"})
    v = verdict.decide(spec, [a, b])
    assert v.result == "reproduced" and "LR sensitivity over 3 lrs (0.001–0.1)" in v.text


def test_figures_mark_the_spike_events_the_table_counts(tmp_path):
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


def test_matches_or_beats_against_several_rows():
    spec = table_for({"kind": "matches_or_beats", "row": "smuon", "than": ["muon", "adamw"]})
    rows = [row("smuon", 1e-3, 1.05, 0.1, 3), row("muon", 1e-3, 1.0, 0.1, 3),
            row("adamw", 1e-3, 1.5, 0.1, 3)]
    v = verdict.decide(spec, rows)
    assert v.result == "reproduced" and "matches within the noise" in v.text
    rows[0] = row("smuon", 1e-3, 1.4, 0.1, 3)  # worse than muon beyond the noise
    assert verdict.decide(spec, rows).result == "not reproduced"
    spec = table_for({"kind": "better", "row": "smuon", "than": ["muon", "adamw"]})
    # merely matching muon is not beating it
    rows[0] = row("smuon", 1e-3, 1.05, 0.1, 3)
    assert verdict.decide(spec, rows).result == "inconclusive"


def test_average_rank_over_variants_per_seed():
    def ranked(optim, variant, values):
        return row(optim, 1e-3, cells={1e-3: values}, variant=variant)

    # higher is better; softsignum first on dataset a, adamw first on b (by the mean)
    rows = [ranked("softsignum", "a", [0.9, 0.91, 0.92]), ranked("adamw", "a", [0.8, 0.82, 0.81]),
            ranked("signum", "a", [0.7, 0.7, 0.7]), ranked("softsignum", "b", [0.6, 0.62, 0.6]),
            ranked("adamw", "b", [0.7, 0.5, 0.65]), ranked("signum", "b", [0.3, 0.3, 0.3])]
    assert verdict.average_ranks(rows, "max") == {"softsignum": 1.5, "adamw": 1.5,
                                                  "signum": 3.0}
    assert verdict.ranks({"x": 1.0, "y": 1.0, "z": None}, "max") == {"x": 1.5, "y": 1.5,
                                                                     "z": 3.0}
    spec = table_for({"kind": "average_rank", "row": "softsignum", "than": ["signum"]},
                     "final.test_accuracy", "max")
    assert verdict.decide(spec, rows).result == "reproduced"
    spec = table_for({"kind": "average_rank", "row": "softsignum", "than": ["adamw"]},
                     "final.test_accuracy", "max")  # per seed: tied, softsignum ahead, tied
    v = verdict.decide(spec, rows)
    assert v.result == "inconclusive" and "average rank over variants: softsignum 1.5" in v.text


def test_a_flatness_claim_holds_within_the_noise_and_fails_beyond_it():
    spec = table_for({"kind": "matches", "row": "a", "than": ["b", "c"]}, "final.val_acc", "max")
    flat = [row("a", 1e-3, 0.58, 0.03, 3), row("b", 1e-3, 0.59, 0.03, 3),
            row("c", 1e-3, 0.57, 0.03, 3)]
    v = verdict.decide(spec, flat)
    assert v.result == "reproduced" and "equal within the noise" in v.text
    # se = sqrt(2·0.03²/3) ≈ 0.0245: a 0.1 gap either way is beyond 2·se
    for other in (0.68, 0.48):
        rows = [flat[0], flat[1], row("c", 1e-3, other, 0.03, 3)]
        assert verdict.decide(spec, rows).result == "not reproduced"
    few = [row("a", 1e-3, 0.58, 0.03, 2), row("b", 1e-3, 0.58, 0.03, 2),
           row("c", 1e-3, 0.58, 0.03, 2)]
    assert verdict.decide(spec, few).result == "inconclusive"
