"""Corpus preparation writes memmaps that decode back to the text, and training reads them."""

import subprocess
import sys

import numpy as np

from tasks import run
from tests.conftest import ROOT, TINY, compose_cfg


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


def test_prepare_rejects_bad_input(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                          "--input", str(tmp_path / "missing.txt"), "--name", "x"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not a file" in out.stderr


def test_a_corpus_name_cannot_leave_the_data_root(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("x" * 2000)
    for name in ("../../x", "/tmp/abs", "a/b", ".hidden", ""):
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                              "--input", str(src), "--name", name, "--data-root",
                              str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "--name must be a name of letters, digits" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # nothing written
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), "text",
                          "--input", str(src), "--name", "ok-1.v2", "--data-root",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout.strip().endswith(f"under {tmp_path / 'data' / 'ok-1.v2'}")  # the real place
