"""Your optimizer in a paper's table (`reproduce.py TABLE --contender`) and the leaderboard
across tables (`scripts/leaderboard.py`). The user's optimizer is a package outside the
repository: examples/byo_optimizer/signedadam, copied to a temporary folder."""

import os
import shutil
import subprocess
import sys

import pytest

from sweeps import contender, spec
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "byo_optimizer"


@pytest.fixture
def user_package(tmp_path):
    """The example package somewhere outside the repository, on PYTHONPATH."""
    shutil.copytree(EXAMPLE / "signedadam", tmp_path / "pkgs" / "signedadam")
    return tmp_path / "pkgs"


def reproduce(cwd, pythonpath, *args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_class_from_outside_enters_a_table_with_one_command(user_package, tmp_path):
    """One command: the class's defaults, an lr grid of the table's size and spacing centred
    on its default lr, the table's seeds and rules; a row and a verdict against the paper's
    method, written under the contender results root (the committed table is untouched)."""
    committed = (ROOT / "results" / "stosign_nonsmooth" / "tiny" / "table.md").read_bytes()
    done = reproduce(tmp_path, user_package, "stosign_nonsmooth", "steps=300",
                     "--contender", "signedadam=signedadam.SignedAdam",
                     "--results", str(tmp_path / "contenders"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "your optimizer (signedadam = signedadam.SignedAdam) in stosign_nonsmooth: " \
           "Verdict:" in done.stdout
    [table] = list((tmp_path / "contenders" / "stosign_nonsmooth").glob("*/table.md"))
    text = table.read_text()
    assert "with contender signedadam" in text and "| signedadam |" in text
    assert "[signedadam vs stosignsgd]" in text  # the claim, the contender in its row's place
    # 3 lrs (the rows' budget), spaced as the rows' grids (3, 3.33: median 3.33), around 1e-3
    assert "signedadam: lr {0.0003, 0.001, 0.00333}" in text
    assert (ROOT / "results" / "stosign_nonsmooth" / "tiny" / "table.md").read_bytes() \
        == committed


def test_a_yaml_contender_brings_its_own_grid_and_arguments(user_package, monkeypatch):
    """The yaml's arguments over the class's defaults (all of them in the config, so that a
    table's `optim.weight_decay=0` reaches it as every row), and its own lr grid."""
    monkeypatch.syspath_prepend(str(user_package))
    c = contender.parse(f"signedadam={EXAMPLE / 'signedadam.yaml'}")
    assert c.lr_grid == (3e-4, 1e-3, 3e-3)
    assert c.arguments == {"betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.0}
    table = spec.load("stosign_nonsmooth").at("tiny")
    assert contender.lr_grid(c, table) == (3e-4, 1e-3, 3e-3)


@pytest.mark.parametrize("text,named", [
    ("signedadam=signedadam.Missing", "has no 'Missing'"),
    ("signedadam=no_such_pkg.Opt", "cannot import 'no_such_pkg'"),
    ("signedadam=torch.nn.Linear", "is not a torch.optim.Optimizer subclass"),
    ("s3=signedadam.SignedAdam", "already an optimizer of optbench"),
    ("Bad-Name=signedadam.SignedAdam", "must be lower-case"),
    ("signedadam", "must be NAME=module.Class"),
    ("x=torch.optim.LBFGS", None),  # LBFGS has a default lr: accepted
])
def test_a_bad_contender_is_named_before_anything_runs(user_package, monkeypatch, text, named):
    monkeypatch.syspath_prepend(str(user_package))
    if named is None:
        assert contender.parse(text).default_lr == 1
        return
    with pytest.raises(spec.SpecError, match=named):
        contender.parse(text)


def test_a_yaml_with_an_unknown_argument_is_refused_by_the_cli(user_package, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_target_: signedadam.SignedAdam\nmomentum: 0.9\n")
    done = reproduce(tmp_path, user_package, "stosign_nonsmooth", "--contender",
                     f"mine={bad}", "--results", str(tmp_path / "contenders"))
    assert done.returncode == 2
    assert "takes no argument ['momentum']" in done.stderr and "'betas'" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "contenders").exists()


def test_the_leaderboard_renders_from_the_committed_records_alone_byte_for_byte(tmp_path):
    outs = []
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "scripts/leaderboard.py", "--out",
                               str(tmp_path / name)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outs.append({f: (tmp_path / name / f).read_bytes()
                     for f in ("leaderboard.md", "leaderboard.png")})
    assert outs[0] == outs[1]
    committed = {f: (ROOT / "results" / f).read_bytes()
                 for f in ("leaderboard.md", "leaderboard.png")}
    assert outs[0] == committed  # the committed leaderboard is what the records give
    text = outs[0]["leaderboard.md"].decode()
    assert "| adamw | " in text and "| rank | optimizer | score | compared on |" in text


def test_in_a_table_without_a_claim_the_contender_is_compared_with_adamw(user_package,
                                                                         monkeypatch):
    """quickstart states no claim: the contender's row is judged against AdamW's, at the
    table's one configuration per row (its default lr)."""
    monkeypatch.syspath_prepend(str(user_package))
    c = contender.parse("signedadam=signedadam.SignedAdam")
    table = contender.with_contender(spec.load("quickstart").at("tiny"), c)
    [part] = table.claim_parts
    assert part.kind == "better" and "vs adamw" in part.label
    assert [(row.optim, [t.optim for t in than]) for row, than in part.pairs] == \
        [("signedadam", ["adamw"])]
    assert table.optimizers["signedadam"].lr == (1e-3,)
    runs = table.expand(["launcher=debug"], aux=table.placeholder_aux())
    assert sum(r.optim == "signedadam" for r in runs) == 1
