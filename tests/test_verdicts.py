"""The edge rule that widens an lr grid, the verdict rule, and the one spike definition the
tables and figures share."""

import math

import pytest

from sweeps import edges, table, verdict
from tasks.train import store
from tasks.train.metrics import LossTracker, SpikeConfig


def row(label, best_lr, mean=1.0, std=0.0, n=3, values_at=None, initial_at=None,
        dirs=()):
    return table.Row(table.RowKey(label), best_lr, mean, std, n, 0, {}, {}, list(dirs),
                     values_at=values_at, initial_at=initial_at)


def verdict_spec(verdict_, key="final.val_loss", mode="min"):
    """A spec holding only what a verdict is decided on."""
    return {"metric": {"key": key, "mode": mode}, "scales": {"tiny": {}}, "verdict": verdict_}


def test_a_best_lr_on_an_edge_adds_the_next_lr_at_the_grids_factor():
    grids = {"a": [1e-3, 3e-3, 1e-2], "b": [1e-3, 3e-3, 1e-2], "c": [1e-3, 3e-3, 1e-2],
             "d": [0.1]}
    rows = [row("a", 1e-3), row("b", 1e-2), row("c", 3e-3), row("d", 0.1),
            row("e", None)]  # e: fixed lr multiple, not in the grids
    wider = edges.extend(rows, grids)
    assert wider["a"] == [pytest.approx(3.33e-4), 1e-3, 3e-3, 1e-2]
    assert wider["b"] == [1e-3, 3e-3, 1e-2, pytest.approx(3.33e-2)]
    assert wider["c"] == grids["c"] and wider["d"] == [0.1] and "e" not in wider
    # diverged at every lr: reach down
    assert edges.extend([row("a", None)], grids)["a"][0] == pytest.approx(3.33e-4)
    assert edges.added(grids["a"], wider["a"]) == [pytest.approx(3.33e-4)]
    assert edges.beyond([1e-3, 1e-2], "high") == 0.1


def test_better_verdict_by_two_standard_errors_over_seeds():
    spec = verdict_spec({"kind": "better", "row": "s3", "than": "adamw"})
    won = verdict.decide(spec, "tiny", [row("s3", 1e-3, 1.0, 0.1, 3),
                                        row("adamw", 1e-3, 1.5, 0.1, 3)])
    assert won.result == "reproduced" and "better by 0.5" in won.text
    # se = sqrt(0.1²/3·2) ≈ 0.082: a 0.1 gap is within 2·se
    tie = verdict.decide(spec, "tiny", [row("s3", 1e-3, 1.0, 0.1, 3),
                                        row("adamw", 1e-3, 1.1, 0.1, 3)])
    assert tie.result == "inconclusive" and "within the noise" in tie.text
    lost = verdict.decide(spec, "tiny", [row("s3", 1e-3, 1.5, 0.1, 3),
                                         row("adamw", 1e-3, 1.0, 0.1, 3)])
    assert lost.result == "not reproduced"
    few = verdict.decide(spec, "tiny", [row("s3", 1e-3, 1.0, 0.1, 2),
                                        row("adamw", 1e-3, 9.0, 0.1, 2)])
    assert few.result == "inconclusive" and "fewer than 3 seeds" in few.text
    diverged = verdict.decide(spec, "tiny", [row("s3", None, None, None, 3),
                                             row("adamw", 1e-3, 1.0, 0.1, 3)])
    assert diverged.result == "not reproduced"


def test_an_accuracy_verdict_adds_the_binomial_error(tmp_path):
    spec = verdict_spec({"row": "s3", "than": "adamw", "binomial": "final.questions"},
                        "final.acc", "max")
    dirs = []
    for i, n in enumerate((100, 100000)):
        dirs.append(tmp_path / f"r{i}")
        dirs[-1].mkdir()
        store.write_json(dirs[-1] / "summary.json", {"final": {"questions": n}})
    # the same seed spread; 100 questions: a 0.07 gap is noise, 100,000: it is not
    rows = [row("s3", 1e-3, 0.57, 0.01, 3, dirs=[dirs[0]]),
            row("adamw", 1e-3, 0.5, 0.01, 3, dirs=[dirs[0]])]
    assert verdict.decide(spec, "tiny", rows).result == "inconclusive"
    rows = [row("s3", 1e-3, 0.57, 0.01, 3, dirs=[dirs[1]]),
            row("adamw", 1e-3, 0.5, 0.01, 3, dirs=[dirs[1]])]
    assert verdict.decide(spec, "tiny", rows).result == "reproduced"


def test_lr_sensitivity_as_wortsman_et_al_define_it():
    lrs = [1e-3, 1e-2, 1e-1]
    # per seed: final losses at the three lrs; the third diverged for the baseline (inf),
    # which counts as the initial loss 5.0
    stable = {(lr, ()): [v, v + 0.01, v - 0.01] for lr, v in zip(lrs, (2.0, 1.8, 2.2))}
    spiky = {(lr, ()): [v, v, v] for lr, v in zip(lrs, (2.0, 1.8, math.inf))}
    initial = {(lr, ()): [5.0, 5.0, 5.0] for lr in lrs}
    a = row("s3", 1e-2, values_at=stable, initial_at=initial)
    b = row("adamw", 1e-2, values_at=spiky, initial_at=initial)
    assert verdict.lr_sensitivity(a, lrs)[0] == pytest.approx((0.2 + 0.0 + 0.4) / 3)
    assert verdict.lr_sensitivity(b, lrs)[0] == pytest.approx((0.2 + 0.0 + 3.2) / 3)
    spec = verdict_spec({"kind": "sensitivity", "row": "s3", "than": "adamw"})
    v = verdict.decide(spec, "tiny", [a, b])
    assert v.result == "reproduced" and "LR sensitivity over 3 lrs (0.001–0.1)" in v.text


def test_a_verdict_names_rows_of_the_table():
    spec = {"optimizers": {"s3": {}, "adamw": {}}, "scales": {"tiny": {}},
            "verdict": {"kind": "better", "row": "s3", "than": "lion"}}
    with pytest.raises(ValueError, match="verdict.than must name rows"):
        verdict.validate("t", spec)
    spec["verdict"] = {"kind": "faster", "row": "s3", "than": "adamw"}
    with pytest.raises(ValueError, match="verdict.kind must be one of"):
        verdict.validate("t", spec)


def test_figures_mark_the_spike_events_the_table_counts(tmp_path):
    from sweeps.render import spike_marks

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
    store.write_json(tmp_path / "summary.json", {"spikes": summary})
    steps = list(range(0, len(losses), 2))  # logged every other step
    xs, ys = spike_marks(tmp_path, steps, [losses[s] for s in steps])
    assert xs == [10, 22] and ys == [9.0, 8.0]


def test_matches_or_beats_against_several_rows():
    spec = verdict_spec({"kind": "matches_or_beats", "row": "smuon", "than": ["muon", "adamw"]})
    rows = [row("smuon", 1e-3, 1.05, 0.1, 3), row("muon", 1e-3, 1.0, 0.1, 3),
            row("adamw", 1e-3, 1.5, 0.1, 3)]
    v = verdict.decide(spec, "tiny", rows)
    assert v.result == "reproduced" and "matches within the noise" in v.text
    rows[0] = row("smuon", 1e-3, 1.4, 0.1, 3)  # worse than muon beyond the noise
    assert verdict.decide(spec, "tiny", rows).result == "not reproduced"
    spec["verdict"]["kind"] = "better"  # merely matching muon is not beating it
    rows[0] = row("smuon", 1e-3, 1.05, 0.1, 3)
    assert verdict.decide(spec, "tiny", rows).result == "inconclusive"


def test_average_rank_over_variants_per_seed():
    def ranked(optim, variant, values):
        r = table.Row(table.RowKey(optim, variant), 1e-3, sum(values) / 3, 0.0, 3, 0, {}, {},
                      [], values_at={(1e-3, ()): values})
        return r

    # higher is better; softsignum first on dataset a, adamw first on b (by the mean)
    rows = [ranked("softsignum", "a", [0.9, 0.91, 0.92]), ranked("adamw", "a", [0.8, 0.82, 0.81]),
            ranked("signum", "a", [0.7, 0.7, 0.7]), ranked("softsignum", "b", [0.6, 0.62, 0.6]),
            ranked("adamw", "b", [0.7, 0.5, 0.65]), ranked("signum", "b", [0.3, 0.3, 0.3])]
    assert verdict.average_ranks(rows, "max") == {"softsignum": 1.5, "adamw": 1.5,
                                                  "signum": 3.0}
    assert verdict.ranks({"x": 1.0, "y": 1.0, "z": None}, "max") == {"x": 1.5, "y": 1.5,
                                                                     "z": 3.0}
    spec = verdict_spec({"kind": "average_rank", "row": "softsignum", "than": ["signum"]},
                        "final.test_accuracy", "max")
    assert verdict.decide(spec, "tiny", rows).result == "reproduced"
    spec["verdict"]["than"] = ["adamw"]  # per seed: tied, softsignum ahead, tied
    v = verdict.decide(spec, "tiny", rows)
    assert v.result == "inconclusive" and "average rank over variants: softsignum 1.5" in v.text


def test_a_flatness_claim_holds_within_the_noise_and_fails_beyond_it():
    spec = verdict_spec({"kind": "matches", "row": "a", "than": ["b", "c"]}, "final.val_acc", "max")
    flat = [row("a", 1e-3, 0.58, 0.03, 3), row("b", 1e-3, 0.59, 0.03, 3),
            row("c", 1e-3, 0.57, 0.03, 3)]
    v = verdict.decide(spec, "tiny", flat)
    assert v.result == "reproduced" and "equal within the noise" in v.text
    # se = sqrt(2·0.03²/3) ≈ 0.0245: a 0.1 gap either way is beyond 2·se
    for other in (0.68, 0.48):
        rows = [flat[0], flat[1], row("c", 1e-3, other, 0.03, 3)]
        assert verdict.decide(spec, "tiny", rows).result == "not reproduced"
    few = [row("a", 1e-3, 0.58, 0.03, 2), row("b", 1e-3, 0.58, 0.03, 2),
           row("c", 1e-3, 0.58, 0.03, 2)]
    assert verdict.decide(spec, "tiny", few).result == "inconclusive"
