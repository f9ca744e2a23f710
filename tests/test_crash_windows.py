"""A checkpoint save stopped at each point between its writes and renames (not at a random
moment): the next start resumes from the newest complete checkpoint and ends bit-identical to
a run that was never stopped.

The stop is a real process exit (os._exit, as SIGKILL would leave things: no cleanup, no
finally), made by a child process (forked from the test's, which has torch imported already)
that wraps os.replace and the checkpoint's file writer and counts them during the one save it
targets.
"""

import json
import multiprocessing
import os

import pytest

from tasks import run
from tasks.train import checkpoint, identity, store
from tests.test_faults import quadratic_cfg

pytestmark = pytest.mark.slow  # subprocesses, SLURM jobs or gloo groups: minutes in all


def _run_and_die_in_save(cfg, target: int, where: str, k: int) -> None:
    """In the child: train `cfg`, and exit (code 9) at the point (`where`, `k`) of save
    number `target`: "during" its first write, "before"/"after" its k-th rename."""
    real_save, real_replace, real_write = checkpoint.save, os.replace, \
        checkpoint._HashingWriter.write
    seen = {"saves": 0, "replaces": 0, "active": False}

    def replace(source, dest):
        if not seen["active"]:
            return real_replace(source, dest)
        seen["replaces"] += 1
        if where == "before" and seen["replaces"] == k:
            os._exit(9)
        real_replace(source, dest)
        if where == "after" and seen["replaces"] == k:
            os._exit(9)

    def write(self, data):
        if seen["active"] and where == "during":  # half of the first block, then gone
            self.f.write(bytes(data)[: max(1, len(data) // 2)])
            self.f.flush()
            os._exit(9)
        return real_write(self, data)

    def save(path, obj):
        seen["saves"] += 1
        seen["active"] = seen["saves"] == target
        try:
            real_save(path, obj)
        finally:
            seen["active"] = False

    os.replace, checkpoint.save, checkpoint._HashingWriter.write = replace, save, write
    run(cfg)


# Renames a save makes: the first (step 10) publishes its digest, then the file; the second
# (step 20) also moves the newest pair to `prev` (its digest first, then the file).
RENAMES = {1: 2, 2: 4}
# (save, where, k) → the step the next start resumes from
POINTS = [(save, where, k) for save, renames in RENAMES.items()
          for where, k in [("during", 0)] + [(w, i) for i in range(1, renames + 1)
                                             for w in ("before", "after")]]


def newest_complete(save: int, where: str, k: int) -> int:
    published = where == "after" and k == RENAMES[save]
    return 10 * save if published else 10 * (save - 1)


def crash_at(tmp_path, save: int, where: str, k: int):
    """The run's config and the exit code of a child that trained it and died in the save."""
    cfg = quadratic_cfg(tmp_path)
    child = multiprocessing.get_context("fork").Process(
        target=_run_and_die_in_save, args=(cfg, save, where, k))
    child.start()
    child.join(timeout=300)
    return cfg, child.exitcode


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    summary = run(quadratic_cfg(tmp_path_factory.mktemp("whole")))
    return summary["evals"], summary["final"]["train_loss"]


@pytest.mark.parametrize("save,where,k", POINTS, ids=lambda v: str(v))
def test_a_stop_anywhere_in_a_save_resumes_from_the_newest_complete_checkpoint(
        tmp_path, uninterrupted, save, where, k):
    cfg, exitcode = crash_at(tmp_path, save, where, k)
    assert exitcode == 9
    rdir = identity.run_dir(cfg)
    summary = run(cfg)  # the next start: no flag, no manual step
    assert summary["status"] == "completed"
    attempts = json.loads((rdir / "env.json").read_text())["attempts"]
    assert attempts[-1]["from_step"] == newest_complete(save, where, k)
    assert (summary["evals"], summary["final"]["train_loss"]) == uninterrupted  # bit-identical
    assert not list(rdir.glob(f".*{store.TEMP_SUFFIX}"))  # the dead save's temp files are gone
    assert not (rdir / "ckpt.pt.corrupt").exists()  # nothing was mistaken for damage


def test_the_points_cover_every_rename_of_a_save(tmp_path):
    """One rename past the last one listed: the save goes through and so does the run."""
    cfg, exitcode = crash_at(tmp_path, 2, "before", RENAMES[2] + 1)
    assert exitcode == 0
    assert store.read_summary(identity.run_dir(cfg))["status"] == "completed"


def test_a_dead_save_leaves_temp_files_that_the_next_start_removes(tmp_path, capsys):
    cfg, exitcode = crash_at(tmp_path, 2, "during", 0)
    rdir = identity.run_dir(cfg)
    [leftover] = rdir.glob(".ckpt.pt.*.tmp")
    assert exitcode == 9 and leftover.stat().st_size > 0
    run(cfg)
    assert not leftover.exists()
    assert f"removed {leftover.name}" in capsys.readouterr().out
