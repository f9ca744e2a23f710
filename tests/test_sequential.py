"""More seeds, validly (sweeps/sequential.py): the two-stage design keeps its error, stage 2 is
sized within its budget, and `reproduce.py TABLE --decide` adds seeds to a committed table's
compared rows at their chosen settings and renders the design's verdict."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from sweeps import confirm, sequential, verdict
from sweeps.records import RecordsError, RunRecord
from sweeps.sequential import Added, Design
from tests.conftest import load_script
from tests.test_verdicts import part, row, table_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_design_is_obrien_flemings_two_looks_and_keeps_its_error():
    design = Design()
    assert design.c1 == pytest.approx(2.797) and design.c2 == pytest.approx(1.977, abs=5e-4)
    # under the null the stage-wise p-value is uniform: its error is what it says at any level
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal(4000), rng.standard_normal(4000)
    p = np.array([design.p_value(float(norm.sf(a)), float(norm.sf(b))) for a, b in zip(z1, z2)])
    for level in (0.01, 0.025, 0.1, 0.5):
        assert abs(np.mean(p < level) - level) < 4 * math.sqrt(level * (1 - level) / 4000)
    # and it rejects at α exactly where the combination passes c₂
    assert design.p_value(0.2, float(norm.sf(math.sqrt(2) * design.c2 - norm.isf(0.2)) + 1e-9)) \
        == pytest.approx(0.025, abs=1e-6)
    assert design.p_value(0.001, None) == 0.001  # decided at stage 1
    assert design.p_value(0.01, None) == 1.0  # went on, and stage 2 never ran


def test_stage_two_asks_what_power_needs_and_shrinks_to_its_budget():
    claim = table_for(part("better", effect=0.05))
    timed = {"wall_time_s": 60.0}  # a minute a run
    rows = [row("s3", [1.0, 1.3, 0.8], summary=timed),
            row("adamw", [1.02, 1.25, 0.85], summary=timed)]
    asked = sequential.plan(claim, rows, budget_min=1000)
    n = len(asked.seeds["s3"])
    assert asked.seeds["s3"] == asked.seeds["adamw"] == list(range(3, 3 + n))  # after 0, 1, 2
    assert sequential.MIN_ADDED <= n <= sequential.MAX_ADDED
    assert asked.minutes == pytest.approx(2 * n)
    small = sequential.plan(claim, rows, budget_min=2 * n / 2)
    assert len(small.seeds["s3"]) == n // 2 and small.minutes <= n
    assert sequential.plan(claim, rows, budget_min=1).seeds == {}  # under 3 seeds a row
    decided = [row("s3", [1.0, 1.1, 0.9], summary=timed),
               row("adamw", [1.5, 1.6001, 1.4002], summary=timed)]
    assert sequential.plan(claim, decided, budget_min=100).seeds == {}


def test_the_verdict_combines_each_stages_own_p_value():
    claim = table_for(part("better", effect=0.02))
    rows = [row("s3", [1.0, 1.1, 0.9]), row("adamw", [1.01, 1.13, 0.91])]
    fixed = verdict.decide(claim, rows)
    later = [("s3", 3, 1.0), ("adamw", 3, 1.03), ("s3", 4, 1.1), ("adamw", 4, 1.12),
             ("s3", 5, 0.9), ("adamw", 5, 0.93)]
    added = Added({"s3": [3, 4, 5], "adamw": [3, 4, 5]},
                  tuple(RunRecord(label, (f"seed={seed}",), {"status": "completed",
                                                             "final": {"val_loss": v}}, ())
                        for label, seed, v in later), 5.0, "test")
    v = sequential.decide(claim, rows, added, {})
    assert fixed.result == "underpowered"  # stage 1 alone: 3 seeds, p 0.065
    stage1 = [0.01, 0.03, 0.01]
    stage2 = [0.03, 0.02, 0.03]
    from scipy import stats
    p_one = stats.ttest_1samp(stage1, 0, alternative="greater").pvalue
    p_two = stats.ttest_1samp(stage2, 0, alternative="greater").pvalue
    expected = Design().p_value(p_one, p_two)
    assert expected < 0.025 < p_one
    assert f"combined p {expected:.3g} for" in v.text, v.text
    assert v.result == "reproduced"
    assert "Stage 1 alone, as a fixed design, read: " + fixed.result in v.details[0]


@pytest.mark.slow
def committed_mini(tmp_path):
    """A two-seed miniature (StoSignSGD against Signum on the nonsmooth problem, one lr each)
    reproduced and committed under tmp_path: (its specs folder, its results, the overrides
    that keep its runs and data there)."""
    import copy

    import yaml

    from sweeps import sources
    from sweeps.reproduce import reproduce
    from tests.test_contender import NONSMOOTH_MINI

    raw = copy.deepcopy(NONSMOOTH_MINI)
    raw["extend_edges"] = 0  # the stochastic sign's noise; Signum at a larger lr stalls further
    raw["optimizers"] = {"stosignsgd": {"lr": [0.03]}, "signum": {"lr": [0.08]}}
    raw["verdict"] = {"kind": "better", "row": "stosignsgd", "than": "signum"}
    raw["scales"]["paper"]["sources"] = {k: {"assumption": "test"} for k in sources.SETTINGS}
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "mini.yaml").write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={tmp_path / 'data'}"]
    assert reproduce("mini", where, "test", results=results, tables=tables) == 0
    return tables, results, where


def test_decide_adds_seeds_to_a_committed_table_and_stops_with_a_decision(tmp_path):
    """A two-seed miniature cannot decide at stage 1 (t with 1 df); --decide adds seeds to the
    two rows at their chosen lrs within its budget, and the table's verdict is the design's.
    A second call adds nothing: the design has two stages."""
    from sweeps.reproduce import decide_more

    tables, results, where = committed_mini(tmp_path)
    out = results / "mini" / "tiny"
    assert "**Verdict: inconclusive" in (out / "table.md").read_text()
    assert decide_more("mini", where, "test --decide", budget_min=2.0, results=results,
                       tables=tables) == 0
    added = sequential.read(out)
    assert set(added.seeds) == {"signum", "stosignsgd"}
    assert all(seeds[0] == 2 and len(seeds) >= sequential.MIN_ADDED
               for seeds in added.seeds.values())
    assert sum((r.get("wall_time_s") or 0) for r in added.runs) / 60 <= 2.0
    text = (out / "table.md").read_text()
    assert "Two stages (sweeps/sequential.py" in text
    line = next(x for x in text.splitlines() if x.startswith("**Verdict"))
    assert line.startswith("**Verdict: reproduced") and "stage 2" in line, line
    assert decide_more("mini", where, "again", budget_min=2.0, results=results,
                       tables=tables) == 0
    assert sequential.read(out).runs == added.runs


@pytest.mark.parametrize("args,named", [
    (["--budget-min", "3"], "--budget-min goes with --decide"),
    (["--decide", "--budget-min", "0"], "--budget-min must be a number of minutes > 0"),
    (["--decide", "--render-only"], "--decide runs alone"),
    (["--confirm", "--decide"], "--certify or --confirm"),
    (["--confirm", "--plan"], "--confirm runs alone"),
    (["--confirm", "--budget-min", "-2"], "--budget-min must be a number of minutes > 0"),
])
def test_decide_refuses_bad_input_before_anything_runs(args, named, tmp_path, capsys,
                                                      monkeypatch):
    cli = load_script("reproduce")

    monkeypatch.setattr(sys, "argv", ["reproduce.py", "stosign_nonsmooth", *args,
                                      f"runs_root={tmp_path}"])
    try:
        code = cli.main()
    except SystemExit as e:  # argparse's parser.error
        code = e.code
    assert code == 2 and named in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_budget_funds_the_cheapest_comparisons_first():
    claim = table_for(part("better", effect=0.05, than=["adamw", "sgd"]))
    fast, slower = {"wall_time_s": 6.0}, {"wall_time_s": 18.0}  # 0.1 and 0.3 min a run
    rows = [row("s3", [1.0, 1.3, 0.8], summary=fast),
            row("adamw", [1.02, 1.25, 0.85], summary=fast),
            row("sgd", [1.02, 1.25, 0.85], summary=slower)]
    n = len(sequential.plan(claim, rows, budget_min=1000).seeds["adamw"])
    # enough for either comparison alone (s3 + adamw: 0.2n; s3 + sgd: 0.4n), not for both
    cheap = sequential.plan(claim, rows, budget_min=0.4 * n)
    assert len(cheap.seeds["adamw"]) == n == len(cheap.seeds["s3"])
    assert len(cheap.seeds.get("sgd", [])) < n
    assert cheap.minutes <= 0.4 * n + 1e-9


def test_freshness_checks_the_runs_stage_two_added(tmp_path):
    """A committed two-stage table is stale when a stage-2 run's key is not the tree's."""
    import dataclasses
    import shutil

    from sweeps import freshness

    folder = tmp_path / "stosign_conversion" / "tiny"
    shutil.copytree(ROOT / "results" / "stosign_conversion" / "tiny", folder)
    before = freshness.check(folder)
    added, table_runs = sequential.read(folder), len(sequential.records.read(folder).runs)
    confirmation = confirm.read(folder)  # its confirmatory experiment is audited too
    assert len(before.runs) == table_runs + len(added.runs) + len(confirmation.runs)
    assert before.state in (freshness.FRESH, freshness.CERTIFIED)
    first = added.runs[0]
    forged = dataclasses.replace(first, summary={**first.summary, "run_key": "0" * 10})
    sequential.write(folder, dataclasses.replace(added, runs=(forged, *added.runs[1:])))
    after = freshness.check(folder)
    assert after.state == freshness.STALE
    assert [r.index for r in after.runs if r.state != freshness.FRESH and
            r.state != freshness.CERTIFIED] == [table_runs]  # stage 2's first run


def _at_lr(r, summary=None):
    """`r` with runs that name their lr, as real records do (an added run finds its cell so)."""
    for cell in r.cells.values():
        cell.runs = [RunRecord(r.label, (f"optim={r.key.optim}", f"optim.lr={cell.lr}",
                                         f"seed={s}"), {**run.summary, **(summary or {})}, ())
                     for s, run in zip(cell.seeds, cell.runs)]
    return r


def _record(label, lr, seed, value):
    optim = label.split()[0]
    return RunRecord(label, (f"optim={optim}", f"optim.lr={lr}", f"seed={seed}"),
                     {"status": "completed", "final": {"val_loss": value},
                      "initial": {"train_loss": 5.0}}, ())


def test_lr_sensitivity_adds_seeds_at_every_lr_of_both_rows():
    """A seed's LR sensitivity is over its whole grid: stage 2 runs each added seed at every lr
    of both rows, each added run lands in the cell it repeats, and the combined test reads
    stage 2's own sensitivities."""
    lrs = [1e-3, 1e-2, 1e-1]
    initial = {lr: [5.0] * 3 for lr in lrs}
    stable = {1e-3: [2.0, 2.1, 1.9], 1e-2: [1.8, 1.8, 1.8], 1e-1: [2.2, 2.0, 2.4]}
    noisy = {1e-3: [2.0, 2.1, 1.9], 1e-2: [1.8, 1.8, 1.8], 1e-1: [2.9, 2.0, 2.6]}
    timed = {"wall_time_s": 60.0}
    a = _at_lr(row("s3", best_lr=1e-2, cells=stable, initial=initial), timed)
    b = _at_lr(row("adamw", best_lr=1e-2, cells=noisy, initial=initial), timed)
    claim = table_for(part("sensitivity"))
    assert verdict.decide(claim, [a, b]).result == "inconclusive"
    asked = sequential.plan(claim, [a, b], budget_min=1000)
    n = len(asked.seeds["s3"])
    assert asked.grid == ("s3", "adamw") and asked.seeds["adamw"] == asked.seeds["s3"]
    assert asked.minutes == pytest.approx(2 * 3 * n)  # three lrs a seed, a minute a run
    assert [c.lr for c in sequential.cells_read(a, True)] == lrs
    later = range(3, 3 + n)
    runs = [_record(label, lr, seed, 1.8 if lr == 1e-2 else (2.0 if label == "s3" else 3.0))
            for label in ("s3", "adamw") for lr in lrs for seed in later]
    added = Added(asked.seeds, tuple(runs), 1000, "test", grid=asked.grid)
    second, both = sequential.merged([a, b], added, claim)
    assert all(cell.seeds == list(later) for r in second for cell in r.cells.values())
    assert [len(cell.seeds) for cell in both[0].cells.values()] == [3 + n] * 3
    v = sequential.decide(claim, [a, b], added, {})
    assert f"stage 2 {n} seeds d +0.667" in v.text and v.result == "reproduced", v.text
    assert f"seeds 3–{2 + n} at every lr of s3 and adamw (their LR" in v.details[0]
    stray = Added(asked.seeds, (*runs, _record("s3", 0.5, 3, 2.0)), 1000, "test",
                  grid=asked.grid)  # an lr the row never ran: refused, not dropped unsaid
    with pytest.raises(RecordsError, match="repeats none of its settings"):
        sequential.merged([a, b], stray, claim)


def test_an_average_rank_adds_seeds_to_every_ranked_row():
    """A seed's ranks are among all the rows of a variant: stage 2 adds its seeds to every
    ranked row, not to the two compared."""
    rows = [row("softsignum", [0.9, 0.6, 0.92], variant="a"),
            row("adamw", [0.8, 0.82, 0.81], variant="a"),
            row("signum", [0.7, 0.7, 0.7], variant="a"),
            row("softsignum", [0.6, 0.62, 0.4], variant="b"),
            row("adamw", [0.5, 0.5, 0.65], variant="b"),
            row("signum", [0.3, 0.3, 0.3], variant="b")]
    claim = table_for(part("average_rank", "softsignum", "adamw"),
                      key="final.test_accuracy", mode="max")
    assert verdict.decide(claim, rows).result == "inconclusive"
    asked = sequential.plan(claim, rows, budget_min=1000)
    assert set(asked.seeds) == {r.label for r in rows} and asked.grid == ()
    n = len(asked.seeds["adamw a"])
    best = {"softsignum": 0.9, "adamw": 0.8, "signum": 0.3}  # softsignum first on both
    runs = tuple(RunRecord(r.label, (f"seed={s}",), {"status": "completed",
                                                     "final": {"test_accuracy": best[r.key.optim]}},
                           ()) for r in rows for s in asked.seeds[r.label])
    v = sequential.decide(claim, rows, Added(asked.seeds, runs, 1000, "test"), {})
    assert f"stage 2 {n} seeds d +1" in v.text, v.text


def test_a_claim_with_no_effect_sizes_stage_two_for_the_way_its_difference_points():
    """With no effect stated, the test to size is the one the observed difference points to:
    a difference against the claim asks as many seeds as the same difference for it."""
    claim = table_for(part("better"))
    spread = [0.1, 0.3, 0.05]
    for_it = [row("s3", [1.0] * 3), row("adamw", [1.0 + s for s in spread])]
    against = [row("s3", [1.0 + s for s in spread]), row("adamw", [1.0] * 3)]
    asks = [sequential.plan(claim, rows, budget_min=1000).seeds["s3"] for rows in
            (for_it, against)]
    assert asks[0] == asks[1] and len(asks[0]) < sequential.MAX_ADDED


def test_a_comparison_without_a_stage_two_gets_its_own_on_unseen_seeds():
    """A comparison whose rows had no stage-2 seeds (the budget left it out, or the claim
    grew) is planned from stage 1 alone; one touching a row that had its stage 2 is not."""
    claim = table_for(part("better", effect=0.05, than=["adamw", "sgd"]))
    timed = {"wall_time_s": 6.0}
    rows = [row("s3", [1.0, 1.3, 0.8], summary=timed),
            row("adamw", [1.02, 1.25, 0.85], summary=timed),
            row("sgd", [1.02, 1.25, 0.85], summary=timed)]
    assert set(sequential.plan(claim, rows, 1000).seeds) == {"s3", "adamw", "sgd"}
    later = sequential.plan(claim, rows, 1000, done=frozenset({"sgd"}))
    assert set(later.seeds) == {"s3", "adamw"} and later.seeds["s3"][0] == 3
    assert "s3 vs sgd: has had its stage 2" in later.lines
    assert sequential.plan(claim, rows, 1000, done=frozenset({"s3"})).seeds == {}


def test_a_comparison_its_stage_two_left_out_says_why_it_cannot_decide():
    claim = table_for(part("better", effect=0.02, than=["adamw", "sgd"]))
    rows = [row("s3", [1.0, 1.1, 0.9]), row("adamw", [1.01, 1.13, 0.91]),
            row("sgd", [1.02, 1.12, 0.93])]
    later = [(label, seed, 1.0 + (0.03 if label == "adamw" else 0.0))
             for label in ("s3", "adamw") for seed in (3, 4, 5)]
    added = Added({"s3": [3, 4, 5], "adamw": [3, 4, 5]},
                  tuple(RunRecord(label, (f"seed={seed}",), {"status": "completed",
                                                             "final": {"val_loss": v}}, ())
                        for label, seed, v in later), 5.0, "test")
    v = sequential.decide(claim, rows, added, {})
    funded, left_out = v.details[1], v.details[2]
    assert "s3 vs adamw" not in left_out and "adamw" in funded
    assert "its stage 2 ran no seeds" in left_out and "its stage 2 ran no seeds" not in funded
    # s3 has six seeds over both stages (its stage 2 was adamw's), sgd three: the left-out
    # comparison is stage 1's, paired on the seeds both rows ran, not Welch over 6 against 3
    assert "per seed +0.02, +0.02, +0.03" in left_out and "paired by seed (0, 1, 2)" in left_out
    assert "Welch" not in left_out, left_out
