"""Committed results match the code: every committed table is fresh (its records' run keys are
the ones the tree gives) or certified (`reproduce.py --certify` re-ran one run per changed
(task, optimizer) and found it bit-identical); an edit to an optimizer's update makes exactly
the tables with its rows stale; certification certifies what computes the same and refuses
what does not."""

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from sweeps import freshness, records
from sweeps.compose import compose_runs
from sweeps.reproduce import RESULTS, reproduce
from tasks.train import identity
from tests.test_tables import MINI

COMMITTED = freshness.committed(RESULTS)


@pytest.mark.slow
@pytest.mark.parametrize("folder", COMMITTED, ids=[f"{p.parent.name}/{p.name}" for p in COMMITTED])
def test_every_committed_table_is_fresh_or_certified(folder):
    state = freshness.check(folder)
    assert state.state in (freshness.FRESH, freshness.CERTIFIED), state.describe()


def test_every_spec_has_a_committed_table_with_its_records():
    """A miniature where one can show anything; where the paper scale itself runs here
    (smuon_exact_p, smuon_limitations) that table is the spec's committed one."""
    from sweeps import spec

    without = [name for name in spec.available()
               if not any((RESULTS / name).glob(f"*/{records.RECORDS_FILE}"))]
    assert not without, f"specs without a committed table: {without}"


def test_an_edit_to_s3s_update_makes_exactly_the_tables_with_s3_rows_stale(tmp_path):
    for package in identity.CODE_PACKAGES:
        shutil.copytree(identity.PROJECT_ROOT / package, tmp_path / package)
    folders = [RESULTS / "s3_half_steps" / "tiny", RESULTS / "stosign_nonsmooth" / "tiny"]
    before = {f: freshness.check(f, tmp_path) for f in folders}
    s3 = tmp_path / "optim" / "s3.py"
    text = s3.read_text()
    assert "denom = root(base, p)" in text
    s3.write_text(text.replace("denom = root(base, p)", "denom = root(base, p) * 1.0"))
    after = {f: freshness.check(f, tmp_path) for f in folders}
    half, nonsmooth = folders
    assert after[half].state == freshness.STALE
    assert ("nanogpt_char", "s3") in after[half].stale_pairs()
    assert "s3_half_steps (tiny): STALE: " in after[half].describe()
    assert "nanogpt_char/s3 9 run(s), code changed" in after[half].describe()
    assert "python scripts/reproduce.py s3_half_steps --certify" in after[half].describe()
    moved = {(a.task, a.optim) for a, b in zip(after[half].runs, before[half].runs)
             if a.key_now != b.key_now}
    assert moved == {("nanogpt_char", "s3")}  # the AdamW rows keep their keys
    assert all(r.state == freshness.CODE_CHANGED for r in after[half].runs if r.optim == "s3")
    assert after[nonsmooth] == before[nonsmooth]  # no S3 rows: every key as it was


# ---------------------------------------------------------------- certification


@pytest.fixture(scope="module")
def made_once(tmp_path_factory, data_root):
    """A miniature table rendered with its records, as committed tables are, made once for the
    module: its spec folder, results root and runs root under one folder."""
    root = tmp_path_factory.mktemp("made")
    tables = root / "tables"
    tables.mkdir()
    raw = {**MINI, "optimizers": {"adamw": {"lr": [1e-3]}, "s3": {"lr": [1e-3]}},
           "seeds": [0]}
    (tables / "mini.yaml").write_text(yaml.safe_dump(raw))
    where = [f"runs_root={root / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    assert reproduce("mini", where, "test", results=root / "results", tables=tables) == 0
    return root


@pytest.fixture
def made(made_once, tmp_path, data_root):
    """This test's own copy of the miniature table: (its folder, the results root, the
    overrides it ran with, the folder of its spec)."""
    for part in ("tables", "results", "runs"):
        shutil.copytree(made_once / part, tmp_path / part)
    where = [f"runs_root={tmp_path / 'runs'}", f"data_root={data_root}", "launcher=debug"]
    return tmp_path / "results" / "mini" / "tiny", tmp_path / "results", where, \
        tmp_path / "tables"


def rewrite(folder, change) -> None:
    """Edit the records file in place: `change(run entry, its resolved config)`."""
    path = folder / records.RECORDS_FILE
    data = json.loads(gzip.decompress(path.read_bytes()))
    composed = compose_runs([e["overrides"] for e in data["runs"]], validate_runs=False)
    for entry, (_, cfg) in zip(data["runs"], composed):
        change(entry, cfg)
    path.write_bytes(gzip.compress(json.dumps(data).encode(), mtime=0))


def made_by_older_code(entry, cfg) -> None:
    """The record as older code would have left it: another code version, hence another key."""
    entry["summary"]["code_version"] = "0123456789ab"
    entry["summary"]["run_key"] = identity.run_key(cfg, code="0123456789ab")


@pytest.mark.slow
def test_a_table_whose_code_changed_but_not_its_numbers_is_certified(made, tmp_path):
    folder, results, where, tables = made
    assert freshness.check(folder, tables=tables).state == freshness.FRESH
    rewrite(folder, made_by_older_code)
    stale = freshness.check(folder, tables=tables)
    assert stale.state == freshness.STALE
    assert {r.state for r in stale.runs} == {freshness.CODE_CHANGED}
    shutil.rmtree(tmp_path / "runs")  # the re-runs are new runs, not the table's old ones
    assert reproduce("mini", [*where, "runs_root=" + str(tmp_path / "again")], "test",
                     results=results, certify=True, tables=tables) == 0
    certified = freshness.check(folder, tables=tables)
    assert certified.state == freshness.CERTIFIED, certified.describe()
    tabled = records.read(folder)
    assert {(c.task, c.optim) for c in tabled.certificates} == {
        ("nanogpt_char", "adamw"), ("nanogpt_char", "s3")}
    assert all(c.made_at == "0123456789ab" for c in tabled.certificates)
    assert "- certified: `nanogpt_char/adamw 0123456789ab → " in (folder / "table.md").read_text()
    # a re-render from the records keeps the certificate in the header
    before = (folder / "table.md").read_bytes()
    assert reproduce("mini", [], "test", render_only=True, results=results, tables=tables) == 0
    assert (folder / "table.md").read_bytes() == before
    # a certificate holds for the code version it was made at: a later edit is stale again
    later = tuple(dataclasses.replace(c, now="fedcba987654") for c in tabled.certificates)
    records.write(folder, dataclasses.replace(tabled, certificates=later))
    assert freshness.check(folder, tables=tables).state == freshness.STALE


@pytest.mark.slow
def test_a_table_whose_numbers_changed_is_not_certified(made, tmp_path, capsys):
    """Where one pair computes other numbers the table stays stale; the pair that matched
    keeps its certificate, so the re-run runs only the pair that differs."""
    folder, results, where, tables = made

    def older_and_other_numbers_for_s3(entry, cfg):
        made_by_older_code(entry, cfg)
        if entry["row"] != "s3":
            return
        for row in entry["metrics"]:
            if "loss" in row:
                row["loss"] += 1e-7  # one rounding step's worth

    rewrite(folder, older_and_other_numbers_for_s3)
    again = [*where, "runs_root=" + str(tmp_path / "again")]
    assert reproduce("mini", again, "test", results=results, certify=True, tables=tables) == 1
    out = capsys.readouterr().out
    assert "NOT certified" in out and ": step 2: loss " in out and "nanogpt_char/s3" in out
    assert "nanogpt_char/adamw" not in out.split("NOT certified")[1]
    assert "re-run it (its 1 certified (task, optimizer) pair(s) are taken, not run again): " \
           "python scripts/reproduce.py mini" in out
    assert freshness.check(folder, tables=tables).state == freshness.STALE
    rerun_runs_s3_alone(made, again)


def test_a_config_change_cannot_be_certified(made, tmp_path, capsys):
    folder, results, where, tables = made
    rewrite(folder, lambda entry, cfg: entry["summary"].update(run_key="feedfacefe"))
    state = freshness.check(folder, tables=tables)
    assert {r.state for r in state.runs} == {freshness.CONFIG_CHANGED}
    assert "# re-run" in state.command
    assert reproduce("mini", where, "test", results=results, certify=True, tables=tables) == 2
    assert "not certifiable" in capsys.readouterr().out


@pytest.mark.slow
def test_the_pairs_whose_code_alone_changed_are_certified_beside_a_config_change(
        made, tmp_path, capsys):
    """A table with one row whose config changed (it must be re-run) and one made by older
    code: the latter is certified all the same, so the re-run runs only the changed row."""
    folder, results, where, tables = made

    def s3_config_adamw_code(entry, cfg):
        if entry["row"] == "s3":
            entry["summary"]["run_key"] = "feedfacefe"
        else:
            made_by_older_code(entry, cfg)

    rewrite(folder, s3_config_adamw_code)
    again = [*where, "runs_root=" + str(tmp_path / "again")]
    assert reproduce("mini", again, "test", results=results, certify=True, tables=tables) == 2
    out = capsys.readouterr().out
    assert "certified 1 (task, optimizer) pair(s); not certifiable: the config of " \
           "nanogpt_char/s3 changed" in out
    rerun_runs_s3_alone(made, again)


@pytest.mark.slow
def test_a_row_added_to_the_spec_runs_alone_the_rest_is_taken_from_the_records(
        made, tmp_path, capsys):
    """A spec that grows a row (a control) is stale until re-run; its records' runs are still
    fresh one by one, so the re-run takes them and trains only the new row (it re-ran the
    whole table before)."""
    folder, results, where, tables = made
    raw = yaml.safe_load((tables / "mini.yaml").read_text())
    raw["optimizers"]["nadam"] = {"lr": [1e-3]}
    (tables / "mini.yaml").write_text(yaml.safe_dump(raw))
    stale = freshness.check(folder, tables=tables)
    assert stale.state == freshness.STALE and "no longer expands" in stale.describe()
    assert {r.state for r in stale.runs} == {freshness.FRESH}  # each run: as it was
    runs_root = tmp_path / "again"
    assert reproduce("mini", [*where, f"runs_root={runs_root}"], "test", results=results,
                     tables=tables) == 0
    assert "(2 fresh or certified): only the others run" in capsys.readouterr().out
    ran = [p.parent.parent.name for p in runs_root.glob("*/*/*/summary.json")]
    assert ran == ["nadam"]  # the new row, and nothing else
    assert freshness.check(folder, tables=tables).state == freshness.FRESH
    assert len(records.read(folder).runs) == 3


def rerun_runs_s3_alone(made, again: list[str]) -> None:
    """adamw is certified: the table's re-run takes its run from the records and runs s3
    alone, and the table is then certified."""
    folder, results, _, tables = made
    assert {(c.task, c.optim) for c in records.read(folder).certificates} == {
        ("nanogpt_char", "adamw")}
    runs_root = Path(again[-1].split("=", 1)[1])
    shutil.rmtree(runs_root)
    assert reproduce("mini", again, "test", results=results, tables=tables) == 0
    ran = {p.parent.parent.name for p in runs_root.glob("*/*/*/summary.json")}
    assert ran == {"s3"}
    final = freshness.check(folder, tables=tables)
    assert final.state == freshness.CERTIFIED, final.describe()


def test_bit_for_bit_ignores_timing_only():
    record = records.RunRecord("r", (), {"status": "completed", "final": {"loss": 1.0},
                                         "wall_time_s": 3.0},
                               ({"step": 1, "loss": 2.0, "tokens_per_s": 100.0},))
    summary = {"status": "completed", "final": {"loss": 1.0}, "wall_time_s": 9.0}
    assert freshness.differences(record, summary, [{"step": 1, "loss": 2.0,
                                                    "tokens_per_s": 5.0}]) == ""
    assert "loss 2.0000000000000004" in freshness.differences(
        record, summary, [{"step": 1, "loss": 2.0000000000000004, "tokens_per_s": 5.0}])
    assert "summary final" in freshness.differences(
        record, {**summary, "final": {"loss": 1.5}}, [{"step": 1, "loss": 2.0}])
    assert freshness.differences(record, summary, []) == "0 metrics rows, the record has 1"


@pytest.mark.slow
@pytest.mark.parametrize("s3_edited", [False, True], ids=["same-code", "s3-computes-else"])
def test_a_record_made_on_another_machine_is_certified_by_its_own_code_run_here(
        made, tmp_path, monkeypatch, capsys, s3_edited):
    """Another CPU's kernels round differently: a record can differ from every run here at
    rounding, whatever the code. Certification then runs the records' own commit here (a git
    worktree, its own scripts/train.py) and certifies when that run equals the run at the
    current code bit for bit, saying so in the certificate; where the current code computes
    something else (S3's step, edited here), it does not."""
    folder, results, where, tables = made

    def rounded_elsewhere(entry, cfg):
        for row in entry["metrics"]:
            if "loss" in row:
                row["loss"] += 1e-7  # one rounding step's worth, as another machine's

    rewrite(folder, rounded_elsewhere)
    assert freshness.check(folder, tables=tables).state == freshness.FRESH
    # the tree's code now reads as an edit (a version the records were not made by); the
    # records' commit, run in its own worktree, is the code that made them
    monkeypatch.setattr(identity, "_project_version", lambda *targets: "fedcba987654")
    if s3_edited:  # in this process only: the records' commit runs S3 as it was
        from optim.s3 import S3

        step = S3.step

        def nudged(self, closure=None):
            out = step(self, closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].add_(1e-6)
            return out

        monkeypatch.setattr(S3, "step", nudged)
    stale = freshness.check(folder, tables=tables)
    assert {r.state for r in stale.runs} == {freshness.CODE_CHANGED}
    again = [*where, "runs_root=" + str(tmp_path / "again")]
    # a checkout of the records' commit cut short by a kill is checked out again; another
    # table's checkout (a certification running beside this one) is left alone
    commit = records.read(folder).runs[0].summary["environment"]["git_commit"]
    cut_short = tmp_path / "again" / "_certify" / commit[:12] / "tree"
    (cut_short / "scripts").mkdir(parents=True)
    (cut_short / "scripts" / "train.py").write_text("raise SystemExit('half a checkout')\n")
    beside = tmp_path / "again" / "_certify" / "0123456789ab" / "tree"
    beside.mkdir(parents=True)
    code = reproduce("mini", again, "test", results=results, certify=True, tables=tables)
    out = capsys.readouterr().out
    assert "differs from its record" in out and "running the records' own code here" in out
    assert beside.exists()
    beside.rmdir()
    tabled = records.read(folder)
    for c in tabled.certificates:
        assert c.basis.startswith("its records' own code (commit ")
        assert "the record (made elsewhere) differs here: step 2: loss" in c.basis
    # the worktree is let go; its runs stay (a second certification would reuse them)
    assert not list((tmp_path / "again" / "_certify").glob("*/tree"))
    assert list((tmp_path / "again" / "_certify").glob("*/runs/*/*/*/summary.json"))
    if s3_edited:
        assert code == 1
        assert {(c.task, c.optim) for c in tabled.certificates} == {("nanogpt_char", "adamw")}
        assert "nanogpt_char/s3" in out.split("NOT certified")[1]
        assert "own code (commit " in out and "run here, differs too: step " in out, out
        assert freshness.check(folder, tables=tables).state == freshness.STALE
        return
    assert code == 0
    certified = freshness.check(folder, tables=tables)
    assert certified.state == freshness.CERTIFIED, certified.describe()
    assert len(tabled.certificates) == 2
    assert "bit-identical to its records' own code" in (folder / "table.md").read_text()


def test_a_failed_certification_names_a_thread_count_that_differs():
    """A CPU run at another thread count reduces in another order: a certification that fails
    says so, with the count to certify at; a GPU run's or an equal count says nothing."""
    from sweeps.certify import threads_differ

    def made(threads, gpus=0):
        return records.RunRecord("s3", (), {"environment": {"cpu_threads": threads,
                                                    "device_count": gpus}}, ())
    now = {"environment": {"cpu_threads": 1}}
    assert "made at 2 CPU thread(s), the re-run at 1" in threads_differ(made(2), now)
    assert "OMP_NUM_THREADS=2" in threads_differ(made(2), now)
    assert threads_differ(made(1), now) == "" and threads_differ(made(2, gpus=1), now) == ""
    assert threads_differ(records.RunRecord("s3", (), {}, ()), now) == ""  # made before the field
