"""Corpus preparation writes memmaps that decode back to the text, and training reads them."""

import subprocess
import sys

import numpy as np
import pytest

from tasks import run
from tests.conftest import ROOT, TINY, compose_cfg, load_script


@pytest.mark.slow
def test_text_corpus_round_trips_and_trains(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, ünïcödé\n"
                   for i in range(400))
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                          "--input", str(src), "--name", "fox", "--data-root",
                          str(tmp_path / "data"), "--val-fraction", "0.1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    train = np.memmap(tmp_path / "data" / "fox" / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(tmp_path / "data" / "fox" / "val.bin", dtype=np.uint16, mode="r")
    decoded = bytes(np.concatenate([train, val]).astype(np.uint8)).decode("utf-8")
    assert decoded == text
    cfg = compose_cfg([*TINY, "task.corpus=fox", "steps=20", "eval_every=10"],
                      runs_root=tmp_path / "runs", data_root=tmp_path / "data")
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["task_info"]["data"]["corpus"] == "fox"
    assert summary["final"]["train_loss"] < summary["initial"]["train_loss"]


@pytest.mark.slow
def test_prepare_rejects_bad_input(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                          "--input", str(tmp_path / "missing.txt"), "--name", "x"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not a file" in out.stderr


@pytest.mark.slow
def test_a_corpus_name_cannot_leave_the_data_root(tmp_path, monkeypatch, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text("x" * 2000)
    # the script's main in this process for the refusals (a process each cost seconds); the
    # accepted name below goes through the command line
    script = load_script("prepare_data")
    for name in ("../../x", "/tmp/abs", "a/b", ".hidden", ""):
        monkeypatch.setattr(sys, "argv", ["prepare_data.py", "text", "--input", str(src),
                                          "--name", name, "--data-root", str(tmp_path / "data")])
        assert script.main() == 2
        assert "--name must be a name of letters, digits" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # nothing written
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                          "--input", str(src), "--name", "ok-1.v2", "--data-root",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout.strip().endswith(f"under {tmp_path / 'data' / 'ok-1.v2'}")  # the real place


@pytest.mark.slow
def test_a_new_task_brings_its_own_preparation_without_touching_the_script(tmp_path):
    """prepare_data.py finds each task package's `preparations` module: a toy task added beside
    the others gets its subcommand, with its own arguments and help, and the script is as it
    was."""
    import shutil

    copy = tmp_path / "project"
    shutil.copytree(ROOT / "tasks", copy / "tasks")
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "prepare_data.py", copy / "scripts")
    toy = copy / "tasks" / "toy"
    toy.mkdir()
    (toy / "__init__.py").write_text("")
    (toy / "preparations.py").write_text(
        "from tasks.train.preparation import Preparation\n\n\n"
        "def run(args, root):\n"
        "    (root / 'toy').mkdir(parents=True, exist_ok=True)\n"
        "    (root / 'toy' / 'data.txt').write_text('x' * args.count)\n"
        "    return f'prepared toy: {args.count} under {root / \"toy\"}'\n\n\n"
        "PREPARATIONS = [Preparation('toy', 'a toy task\\'s data', run,\n"
        "                            lambda p: p.add_argument('--count', type=int, default=3))]\n")
    script = copy / "scripts" / "prepare_data.py"
    listed = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert "toy" in listed.stdout and "a toy task's data" in listed.stdout
    done = subprocess.run([sys.executable, str(script), "toy", "--count", "5", "--data-root",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "toy" / "data.txt").read_text() == "xxxxx"
    assert script.read_bytes() == (ROOT / "scripts" / "prepare_data.py").read_bytes()


def test_two_packages_cannot_declare_one_preparation(tmp_path, monkeypatch):
    import importlib

    from tasks.train import preparation

    package = tmp_path / "clash"
    for sub in ("a", "b"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
        (package / sub / "preparations.py").write_text(
            "from tasks.train.preparation import Preparation\n"
            "PREPARATIONS = [Preparation('same', 'h', lambda args, root: '')]\n")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(preparation.PreparationError, match="'same' is declared by both "
                                                           "clash.a.preparations and "
                                                           "clash.b.preparations"):
        preparation.discover("clash")
