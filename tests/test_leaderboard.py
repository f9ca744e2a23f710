"""The leaderboard's rules on entries made up to show them (sweeps/leaderboard.py): every
problem's best over every entrant shown, contenders included; a problem counts with two
entrants or more; the ranking counts an unentered problem as failed, so entering few cannot
help; the probability of improvement over AdamW with a stratified bootstrap interval; fixed
colours."""

import pytest

from sweeps import leaderboard as lb


def entry(problem, optim, seeds, maximize=False, contender=False):
    value = sum(seeds) / len(seeds)
    sign = 1 if maximize else -1
    return lb.Entry(problem, optim, value, maximize, tuple(sign * v for v in seeds), None, None,
                    contender)


def test_a_problems_best_is_over_everyone_shown_contenders_included():
    entries = [entry("t/tiny", "signum", [1.0, 1.0]), entry("t/tiny", "mine", [0.5, 0.5],
                                                           contender=True),
               entry("t/tiny", "yours", [2.0, 2.0], contender=True)]
    ratio = lb.ratios(lb.counted(entries))
    assert ratio == {("t/tiny", "mine"): 1.0, ("t/tiny", "signum"): 2.0,
                     ("t/tiny", "yours"): 4.0}
    acc = [entry("a/tiny", "x", [0.8], maximize=True), entry("a/tiny", "y", [0.4], True)]
    assert lb.ratios(lb.counted(acc)) == {("a/tiny", "x"): 1.0, ("a/tiny", "y"): 2.0}


def test_a_problem_with_one_entrant_does_not_count_and_entering_few_cannot_rank_first():
    entries = [entry("solo/tiny", "lucky", [1.0]),  # best by construction: not counted
               *[entry(f"t{i}/tiny", "adamw", [1.0, 1.1]) for i in range(4)],
               *[entry(f"t{i}/tiny", "steady", [1.05, 1.15]) for i in range(4)],
               entry("t0/tiny", "lucky", [0.9, 1.0])]  # wins the one shared problem it entered
    assert set(lb.counted(entries)) == {"t0/tiny", "t1/tiny", "t2/tiny", "t3/tiny"}
    lines = {line["optim"]: line for line in lb.board(entries)}
    assert lines["lucky"]["compared_on"] == 1 and lines["lucky"]["wins"] == 1
    assert lines["steady"]["score"] > lines["lucky"]["score"]  # 4 close seconds beat 1 win
    assert [line["optim"] for line in lb.board(entries)] == ["adamw", "steady", "lucky"]


def test_probability_of_improvement_over_adamw_with_a_stratified_interval():
    better = [entry(f"t{i}/tiny", "fast", [0.8, 0.81, 0.79]) for i in range(3)]
    base = [entry(f"t{i}/tiny", "adamw", [1.0, 1.01, 0.99]) for i in range(3)]
    tied = [entry(f"t{i}/tiny", "same", [1.0, 1.01, 0.99]) for i in range(3)]
    lines = {line["optim"]: line for line in lb.board([*better, *base, *tied])}
    p, low, high, n = lines["fast"]["vs_adamw"]
    assert (p, low, high, n) == (1.0, 1.0, 1.0, 3)  # every seed beats every AdamW seed
    p, low, high, n = lines["same"]["vs_adamw"]
    assert p == pytest.approx(0.5) and low < 0.5 < high  # undecided: the interval holds 0.5
    assert lines["adamw"]["vs_adamw"] is None
    again = {line["optim"]: line for line in lb.board([*better, *base, *tied])}
    assert again["same"]["vs_adamw"] == lines["same"]["vs_adamw"]  # seeded: the same bytes


def test_colours_stay_put_when_a_contender_arrives():
    before = lb.colours(["adamw", "s3"])
    after = lb.colours(["adamw", "s3", "zz_contender"])
    assert before["adamw"] == after["adamw"] and before["s3"] == after["s3"]
    assert after["zz_contender"] not in [after[k] for k in ("adamw", "s3")]
