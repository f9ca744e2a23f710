"""A run's environment, and how tables report the environments their runs came from."""

from importlib import metadata

import pytest
import torch

from sweeps.collect import Cell, Row
from sweeps.records import RunRecord
from sweeps.render import run_environments
from sweeps.spec import RowKey
from tasks.train import environment


def test_environment_names_commit_python_torch_device_and_libraries():
    env = environment.environment()
    assert env["git_commit"] == environment.git_commit()
    assert env["python"].count(".") == 2 and env["torch"]
    assert env["device"]  # the GPU's name, or the CPU's model name
    assert env["cpu_threads"] == torch.get_num_threads()  # numbers on a CPU depend on it
    for name in ("hydra-core", "omegaconf", "submitit", "wandb", "transformers", "peft",
                 "datasets", "numpy"):
        assert env["libraries"][name] == metadata.version(name)


def test_git_commit_marks_a_dirty_tree_and_is_none_outside_git(tmp_path):
    import subprocess

    assert environment.git_commit(tmp_path) is None
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("a")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    clean = environment.git_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "results").mkdir()  # a table's output does not make the tree dirty
    (tmp_path / "results" / "table.md").write_text("a")
    subprocess.run([*git, "-C", str(tmp_path), "add", "results"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "y"], check=True)
    clean = environment.git_commit(tmp_path)
    (tmp_path / "results" / "table.md").write_text("b")
    assert environment.git_commit(tmp_path) == clean
    (tmp_path / "f").write_text("b")
    assert environment.git_commit(tmp_path) == clean + "-dirty"


def _row(tmp_path, envs):
    runs = [RunRecord("adamw", (), {"status": "completed", "environment": env, "final": {"x": 1}},
                      ()) for env in envs]
    row = Row(RowKey("adamw"))
    row.cells[(1e-3, ())] = Cell(1e-3, (), list(range(len(runs))), runs, [1.0] * len(runs))
    row.best = (1e-3, ())
    return row


@pytest.fixture
def env():
    return {"git_commit": "a" * 40, "python": "3.11.7", "torch": "2.15.0", "cuda": "13.0",
            "cudnn": 91000, "device": "NVIDIA H100", "host": "node1",
            "libraries": {"numpy": "2.4.6", "wandb": None}}


def test_a_table_shows_one_environment_line_when_runs_agree(tmp_path, env):
    line = run_environments([_row(tmp_path, [env, {**env, "host": "node2"}])])
    assert line == ("commit aaaaaaaaaaaa, python 3.11.7, torch 2.15.0, CUDA 13.0, cuDNN 91000, "
                    "NVIDIA H100, numpy 2.4.6")
    coded = run_environments([_row(tmp_path, [{**env, "code_version": "0123456789ab"}])])
    assert coded.startswith("commit aaaaaaaaaaaa, code 0123456789ab, python")


def test_a_table_lists_each_environment_with_its_run_count(tmp_path, env):
    other = {**env, "torch": "2.16.0", "git_commit": "b" * 40 + "-dirty"}
    line = run_environments([_row(tmp_path, [env, other, other]), _row(tmp_path / "x", [{}])])
    assert line.count("[") == 3
    assert "[2 runs] commit bbbbbbbbbbbb-dirty" in line and "torch 2.16.0" in line
    assert "[1 runs] not recorded" in line
