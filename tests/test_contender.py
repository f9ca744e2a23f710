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


@pytest.mark.slow
def test_a_class_from_outside_enters_a_table_with_one_command(user_package, tmp_path):
    """One command: the class's defaults, an lr grid of the table's size and spacing centred
    on its default lr, the table's seeds and rules; a row and a verdict against the paper's
    method, written under the contender results root (the committed table is untouched). The
    table's own rows come from its committed records: only the contender's 9 runs train."""
    committed = (ROOT / "results" / "stosign_nonsmooth" / "tiny" / "table.md").read_bytes()
    done = reproduce(tmp_path, user_package, "stosign_nonsmooth",
                     "--contender", "signedadam=signedadam.SignedAdam",
                     "--results", str(tmp_path / "contenders"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "45 runs, 36 taken from the records; submitted 9" in done.stdout
    assert "your optimizer (signedadam = signedadam.SignedAdam) in stosign_nonsmooth: " \
           "Verdict:" in done.stdout
    [table] = list((tmp_path / "contenders" / "stosign_nonsmooth").glob("*/table.md"))
    text = table.read_text()
    assert "with contender signedadam" in text and "| signedadam |" in text
    assert "[signedadam vs stochastic_sign]" in text  # the claim, the contender in its row's place
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
    ("x=torch.optim.LBFGS", r"LBFGS.step needs a closure .* the training loop steps once per "
                            r"batch and gives none"),
])
def test_a_bad_contender_is_named_before_anything_runs(user_package, monkeypatch, text, named):
    monkeypatch.syspath_prepend(str(user_package))
    with pytest.raises(spec.SpecError, match=named):
        contender.parse(text)


@pytest.mark.slow
def test_a_yaml_with_an_unknown_argument_is_refused_by_the_cli(user_package, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_target_: signedadam.SignedAdam\nmomentum: 0.9\n")
    done = reproduce(tmp_path, user_package, "stosign_nonsmooth", "--contender",
                     f"mine={bad}", "--results", str(tmp_path / "contenders"))
    assert done.returncode == 2
    assert "takes no argument ['momentum']" in done.stderr and "'betas'" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "contenders").exists()


@pytest.mark.slow
def test_the_leaderboard_renders_from_the_committed_records_alone_byte_for_byte(tmp_path):
    # one rendering here against the one committed from another process (and commit):
    # equal bytes are what two renderings must give
    done = subprocess.run([sys.executable, "scripts/leaderboard.py", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    outs = [{f: (tmp_path / f).read_bytes() for f in ("leaderboard.md", "leaderboard.png")}]
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


# ---------------------------------------------------------------- real third-party optimizers

NONSMOOTH_MINI = {
    "name": "mini", "title": "nonsmooth mini", "claim": "SignSGD stalls",
    "scales": {"tiny": {"label": "test miniature", "overrides": [
        "task=nonsmooth", "steps=200", "eval_every=100", "log_every=20", "grad_clip=null",
        "optim.weight_decay=0", "metrics.cap_factor=10", "progress=false"]},
               "paper": {"label": "x", "overrides": ["task=nonsmooth"], "sources": {
                   "na": {"na": "a test"}}}},
    "optimizers": {"signsgd": {"lr": [0.03, 0.1]}, "signum": {"lr": [0.03, 0.1]}},
    "seeds": [0, 1], "metric": {"key": "final.distance", "mode": "min"},
    "extend_edges": 1, "verdict": {"kind": "better", "row": "signum", "than": "signsgd"},
}


@pytest.fixture(scope="module")
def mini_nonsmooth(tmp_path_factory):
    """The mini table's spec, and its records made once for the module's tests: each
    contender then runs its own row only (the table's rows are taken from the records)."""
    import yaml

    from sweeps import sources
    from sweeps.reproduce import reproduce as run_table

    root = tmp_path_factory.mktemp("mini")
    raw = {**NONSMOOTH_MINI}
    raw["scales"]["paper"]["sources"] = {k: {"assumption": "test"} for k in sources.SETTINGS}
    (root / "tables").mkdir()
    (root / "tables" / "mini.yaml").write_text(yaml.safe_dump(raw))
    assert run_table("mini", [f"runs_root={root / 'table_runs'}", f"data_root={root / 'data'}"],
                     "test", results=root / "committed", tables=root / "tables") == 0
    return root


def enter(name, target, mini, tmp_path, capsys):
    from sweeps.reproduce import reproduce as run_table

    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={mini / 'data'}"]
    code = run_table("mini", where, "test", contender=contender.parse(f"{name}={target}"),
                     results=tmp_path / "contenders", tables=mini / "tables",
                     committed=mini / "committed")
    out = capsys.readouterr().out
    table = (tmp_path / "contenders" / "mini" / f"tiny-{name}" / "table.md").read_text()
    return code, out, table


@pytest.mark.slow
def test_an_optimizer_whose_runs_all_fail_is_reported_failed_never_diverged(
        mini_nonsmooth, tmp_path, capsys, monkeypatch):
    """Its runs raised: the table says failed, with the first error line, the verdict is
    'failed', and the edge rule does not go looking for an lr that would not raise."""
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "broken_opt.py").write_text(
        "import torch\n\n\nclass Broken(torch.optim.Optimizer):\n"
        "    def __init__(self, params, lr=1e-2, weight_decay=0.0):\n"
        "        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))\n\n"
        "    def step(self, closure=None):\n"
        "        raise RuntimeError('this optimizer is broken')\n")
    monkeypatch.syspath_prepend(str(pkg))
    code, out, table = enter("broken", "broken_opt.Broken", mini_nonsmooth, tmp_path, capsys)
    assert code == 1  # a run failed
    assert "| broken | – | failed at every lr |" in table
    assert "- broken: 4 run(s); first error: RuntimeError: this optimizer is broken" in table
    assert "**Verdict: failed — broken vs signum: failed (broken's runs failed at every " \
           "setting" in table
    assert "diverged at every" not in table
    assert "broken +" not in table.split("Grids widened")[1].split("\n")[0]  # not extended


@pytest.mark.slow
def test_real_third_party_optimizers_get_rows_and_run_only_their_own(mini_nonsmooth, tmp_path,
                                                                     capsys):
    """Schedule-free optimizers train in train mode and evaluate in eval mode: they get rows
    (before, every run raised 'Optimizer was not in train mode' and the table said
    'diverged'); pytorch-optimizer's get rows as they are. The table's own rows come from its
    committed records (their run keys are the tree's): two contenders enter one after the
    other, each running its own runs only, and each table lists the records it read."""
    table_runs = mini_nonsmooth / "table_runs"
    made = sorted(table_runs.glob("*/*/*/summary.json"))
    committed = mini_nonsmooth / "committed" / "mini" / "tiny" / "records.json.gz"
    for name, target in (("sfadamw", "schedulefree.AdamWScheduleFree"),  # one per library
                         ("po_lion", "pytorch_optimizer.Lion")):
        code, out, table = enter(name, target, mini_nonsmooth, tmp_path, capsys)
        assert code == 0, out
        assert f"reusing the runs of {committed}" in out
        ran = {p.parts[-3] for p in (tmp_path / "runs").glob("*/*/*/summary.json")}
        assert name in ran and not ran & {"signsgd", "signum"}  # the table's rows: taken
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |")
                   or line.startswith(f"| **{name}** |"))
        assert "failed" not in row and "diverged at every lr" not in row, row
        assert "Failed runs" not in table
    assert sorted(table_runs.glob("*/*/*/summary.json")) == made
