"""A confirmatory experiment (sweeps/confirm.py): fresh seeds for the compared rows at their
chosen settings, sized for 90% power at Holm's strictest level from the table's spread, within
its budget or not at all, and a verdict decided on those seeds alone."""

import math

import pytest
from statsmodels.stats.power import ttest_power

from sweeps import confirm, sequential, verdict
from sweeps.records import RunRecord
from sweeps.stats import ALPHA
from tests.test_verdicts import part, row, table_for

TIMED = {"wall_time_s": 6.0}  # a tenth of a minute a run


def fresh_runs(values: dict[str, list[float]], first: int) -> confirm.Confirmation:
    """A confirmation whose row `label` scored values[label][k] at seed first + k."""
    seeds = {label: list(range(first, first + len(v))) for label, v in values.items()}
    runs = tuple(RunRecord(label, (f"seed={first + k}",),
                           {"status": "completed", "final": {"val_loss": x}}, ())
                 for label, v in values.items() for k, x in enumerate(v))
    return confirm.Confirmation(seeds, runs, 5.0, "test --confirm", ("sized here",))


def test_each_compared_row_gets_the_seeds_90_percent_power_asks_on_seeds_never_used():
    claim = table_for(part("better", effect=0.05, than=["adamw", "sgd"]))
    rows = [row("s3", [1.0, 1.3, 0.8], summary=TIMED),
            row("adamw", [1.02, 1.25, 0.85], summary=TIMED),
            row("sgd", [1.1, 1.45, 0.88], summary=TIMED)]
    planned = confirm.plan(claim, rows, used={0, 1, 2, 7}, budget_min=1000)
    assert set(planned.seeds) == {"s3", "adamw", "sgd"}
    assert all(seeds[0] == 8 for seeds in planned.seeds.values())  # after every seed used
    # s3 vs adamw: the claimed effect 0.05 at the paired spread, one-sided at α/2 (Holm's
    # strictest step over the two comparisons), 90% power, computed here from statsmodels
    per_seed = [1.02 - 1.0, 1.25 - 1.3, 0.85 - 0.8]
    mean = sum(per_seed) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 2)
    expected = next(n for n in range(2, 201)
                    if ttest_power(0.05 / sd, n, ALPHA / 2, alternative="larger") >= 0.9)
    assert len(planned.seeds["adamw"]) == expected
    assert len(planned.seeds["s3"]) == max(len(planned.seeds["adamw"]),
                                           len(planned.seeds["sgd"]))  # the most it is asked
    assert planned.minutes == pytest.approx(0.1 * sum(len(s) for s in planned.seeds.values()))
    assert "90% power at the claimed effect 0.05" in planned.sizing[0]


def test_the_pilot_is_every_seed_the_table_ran_its_stage_2_included():
    claim = table_for(part("better", effect=0.05))
    rows = [row("s3", [1.0, 1.3, 0.8]), row("adamw", [1.02, 1.25, 0.85])]
    stage2 = fresh_runs({"s3": [1.0, 1.1, 0.9], "adamw": [1.1, 1.2, 1.0]}, first=3)
    added = sequential.Added(stage2.seeds, stage2.runs, 1.0, "test --decide")
    seen = verdict.compare_part(claim, claim.claim_parts[0],
                                confirm.pilot(claim, rows, added), {})[0]
    assert seen.difference.seeds == (0, 1, 2, 3, 4, 5)
    assert confirm.pilot(claim, rows, None) == rows


def test_a_confirmation_over_its_budget_or_without_a_difference_is_refused_whole():
    claim = table_for(part("better", effect=0.05))
    rows = [row("s3", [1.0, 1.3, 0.8], summary=TIMED),
            row("adamw", [1.02, 1.25, 0.85], summary=TIMED)]
    with pytest.raises(ValueError, match=r"needs about [\d.]+ min of run time .* over "
                                         r"--budget-min 0.5; nothing ran"):
        confirm.plan(claim, rows, used={0, 1, 2}, budget_min=0.5)
    diverged = [row("s3", [1.0, 1.3, 0.8]), row("adamw")]
    with pytest.raises(ValueError, match="s3 vs adamw has no difference to confirm "
                                         r"\(adamw diverged at every setting\)"):
        confirm.plan(claim, diverged, used={0, 1, 2}, budget_min=1000)


def test_the_verdict_is_the_fresh_seeds_alone_and_counts_every_look():
    """A pilot that reads reproduced (s3 better on every seed) and a confirmation that shows
    no difference: the verdict is the confirmation's. Pooled with the pilot's seeds it would
    read reproduced."""
    claim = table_for(part("better"))
    pilot_rows = [row("s3", [1.0, 1.0, 1.0, 1.0]), row("adamw", [1.2, 1.21, 1.19, 1.2])]
    pilot = verdict.decide(claim, pilot_rows)
    assert pilot.result == "reproduced"
    confirmation = fresh_runs({"s3": [1.0, 1.1, 0.9, 1.05], "adamw": [1.0, 1.08, 0.93, 1.04]},
                              first=4)
    v = confirm.decide(claim, pilot_rows, confirmation, {}, pilot, None)
    assert v.result != "reproduced", v.text
    assert "paired by seed (4, 5, 6, 7)" in v.details[1]
    assert "read: reproduced (superseded)" in v.details[0]
    assert "looked at 2 times" in v.details[0] and "at most 2α = 0.05" in v.details[0]
    # and it decides on them: a confirmation that shows the difference reads reproduced
    shown = fresh_runs({"s3": [1.0, 1.1, 0.9, 1.05], "adamw": [1.2, 1.31, 1.1, 1.26]}, first=4)
    assert confirm.decide(claim, pilot_rows, shown, {}, pilot, None).result == "reproduced"
    # after a pilot with a stage 2 (sweeps/sequential.py), this is the claim's third look
    stage2 = sequential.Added({"s3": [3], "adamw": [3]}, (), 1.0, "test --decide")
    head = confirm.decide(claim, pilot_rows, shown, {}, pilot, stage2).details[0]
    assert "seeds and its stage 2" in head and "at most 3α = 0.075" in head, head


def test_a_claim_over_a_whole_grid_is_refused():
    claim = table_for(part("sensitivity"))
    with pytest.raises(ValueError, match="sensitivity claim reads every lr of a seed"):
        confirm.plan(claim, [row("s3", [1.0, 1.1, 0.9]), row("adamw", [1.0, 1.1, 0.9])],
                     used={0, 1, 2}, budget_min=10)


@pytest.mark.slow
def test_confirm_runs_a_committed_tables_experiment_and_renders_its_verdict(tmp_path):
    """reproduce.py TABLE --confirm on a two-seed miniature (t with 1 df decides nothing):
    fresh seeds at the chosen lrs, the table's verdict the experiment's, the index and
    freshness counting its runs; a second call runs nothing."""
    from sweeps import freshness, index, records
    from sweeps.reproduce import confirm_more, decide_more, render_from_records
    from sweeps.spec import load
    from tests.test_sequential import committed_mini

    tables, results, where = committed_mini(tmp_path)
    out = results / "mini" / "tiny"
    assert confirm_more("mini", where, "test --confirm", budget_min=5.0, results=results,
                        tables=tables) == 0
    done = confirm.read(out)
    assert set(done.seeds) == {"signum", "stosignsgd"}
    assert all(seeds[0] == 2 and len(seeds) >= confirm.MIN_SEEDS for seeds in done.seeds.values())
    text = (out / "table.md").read_text()
    assert "Confirmatory experiment (sweeps/confirm.py" in text
    seeds = ", ".join(map(str, done.seeds["stosignsgd"]))
    assert f"paired by seed ({seeds})" in text  # the fresh seeds alone, not 0 and 1 with them
    entry = next(e for e in index.entries(results, tables) if e.table == "mini")
    assert entry.confirmed == len(done.runs) and "+ confirmatory" in index.text(results, tables)
    assert freshness.check(out, tables=tables).state == "fresh"
    checked = freshness.check(out, tables=tables).runs
    assert len(checked) == len(records.read(out).runs) + len(done.runs)  # its runs audited too
    assert confirm_more("mini", where, "again", budget_min=5.0, results=results,
                        tables=tables) == 0
    assert confirm.read(out).runs == done.runs
    with pytest.raises(ValueError, match="has a confirmatory experiment .* one more look"):
        decide_more("mini", where, "test --decide", budget_min=2.0, results=results,
                    tables=tables)
    before = (out / "table.md").read_bytes()
    render_from_records(load("mini", tables).at("tiny"), out)
    assert (out / "table.md").read_bytes() == before
