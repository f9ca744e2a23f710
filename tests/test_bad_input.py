"""Bad input a user (or a hostile file) can give, each refused with a message naming the key or
file, before any run dir or job exists (the scripts turn these errors into exit code 2:
tests/test_config.py runs the CLI)."""

import json
import os
import time

import pytest

from sweeps import contender, spec, yamlfile
from tasks import run
from tasks.train import checkpoint, identity
from tasks.train.errors import ConfigError
from tests.conftest import compose_cfg

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi"))


def nonsmooth(tmp_path, *overrides, runs_root=None):
    if not any(o.startswith("runs_root=") for o in overrides):
        runs_root = runs_root or tmp_path / "runs"
    return compose_cfg(["task=nonsmooth", "steps=3", "progress=false", *overrides],
                       runs_root=runs_root, data_root=tmp_path / "data")


@pytest.mark.parametrize("overrides,message", [
    (["grad_clip=abc"], r"grad_clip must be null or a finite number > 0, got 'abc'"),
    (["grad_clip=nan"], r"grad_clip must be null or a finite number > 0, got nan"),
    (["device=cpu:abc"], r"device must be auto, cpu, cuda, cuda:N or mps, got 'cpu:abc'"),
    (["seed=1234567890123456789012345"], r"seed must be an integer in \[0, 4294967295\]"),
    (["task.dim=100000000000"], r"needs at least 800 GB for its weights and gradients alone"),
    (["task.dim=1e11"], r"task.dim must be an integer >= 1, got 100000000000.0"),
    (["metrics.cap_factor=nan"], r"metrics.cap_factor must be a finite number, got nan"),
    (["progress=maybe"], r"progress must be true or false, got 'maybe'"),
    (["optim=s3", "optim.nesterov=maybe"], r"optim.nesterov must be true or false"),
    (["optim=s3", "optim.fused=1"], r"optim.fused must be true or false, got 1"),
    (["runs_root=/dev/null"], r"runs_root='/dev/null': /dev/null is not a folder"),
    (["runs_root="], r"runs_root must be a folder's path, got ''"),
], ids=["clip-text", "clip-nan", "device", "seed-25-digits", "dim-too-big", "dim-float",
        "cap-nan", "bool-run", "bool-optim", "bool-int", "runs-root-devnull", "runs-root-empty"])
def test_a_bad_value_is_refused_naming_its_key_before_the_run_dir(tmp_path, overrides, message):
    cfg = nonsmooth(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def test_a_runs_root_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for root in (afile, afile / "below"):
        with pytest.raises(ConfigError, match=rf"runs_root='{root}': {afile} is not a folder"):
            run(nonsmooth(tmp_path, runs_root=root))


def test_an_empty_OPTBENCH_RUNS_is_an_error_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTBENCH_RUNS", "")
    cfg = compose_cfg(["task=nonsmooth", "steps=3", "progress=false"],
                      data_root=tmp_path / "data")
    with pytest.raises(ConfigError, match="an empty OPTBENCH_RUNS"):
        run(cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_runs_root_other_users_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match=r"can be written by other users \(mode 0o777\).*"
                                          r"chmod go-w"):
        run(nonsmooth(tmp_path, runs_root=shared))
    assert list(shared.iterdir()) == []
    private = shared / "me"  # the fix the message suggests: made private
    assert run(nonsmooth(tmp_path, runs_root=private))["status"] == "completed"
    assert (private.stat().st_mode & 0o777) == 0o700


# ---------------------------------------------------------------- files a user hands over


@pytest.mark.parametrize("text,message", [
    (ALIAS_BOMB, "expands to more than 100000 values"),
    ("_target_: torch.optim.SGD\nlr: !!python/object/apply:os.system ['true']\n",
     "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not plain YAML"),
    ("a: &a [1, *a]\n", "contains itself"),
    ("a: [1, 2\n", "is not valid YAML"),
], ids=["alias-bomb", "python-tag", "recursive", "torn"])
def test_a_contender_yaml_is_read_with_bounds(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    t0 = time.time()
    with pytest.raises(spec.SpecError, match=message):
        contender.parse(f"mine={path}")
    assert time.time() - t0 < 5


def test_the_alias_bomb_is_a_few_hundred_bytes_and_a_table_spec_is_bounded_too(tmp_path):
    assert len(ALIAS_BOMB) < 420
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    with pytest.raises(spec.SpecError, match="table bomb: .* alias bomb"):
        spec.load("bomb", tmp_path)
    with pytest.raises(yamlfile.YamlError, match="alias bomb"):
        yamlfile.load(tmp_path / "bomb.yaml", "test")


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/b", ".hidden", "Quick start"])
def test_a_table_name_cannot_reach_outside_conf_table(name):
    with pytest.raises(spec.SpecError, match="a table name is letters, digits and _"):
        spec.load(name)


# ---------------------------------------------------------------- damaged run files


def test_a_digest_that_is_not_text_sets_the_newest_aside_and_resumes_from_the_previous(
        tmp_path):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, {"step": 1})
    checkpoint.save(path, {"step": 2})
    checkpoint.digest_path(path).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.warns(UserWarning, match="is not a SHA-256 digest"):
        assert checkpoint.load(path) == {"step": 1}
    checkpoint.save(path, {"step": 3})  # a save after it works, keeping the good pair
    assert checkpoint.load(path) == {"step": 3}
    assert checkpoint.load(checkpoint.previous_path(path)) == {"step": 1}


def test_a_run_resumes_past_a_damaged_digest(tmp_path):
    cfg = nonsmooth(tmp_path, "steps=20", "checkpoint_every=5", "eval_every=5")
    rdir = identity.run_dir(cfg)
    reference = run(nonsmooth(tmp_path, "steps=20", "checkpoint_every=5", "eval_every=5",
                              runs_root=tmp_path / "reference"))
    with pytest.raises(RuntimeError, match="node lost"):  # after the checkpoint of step 10
        run_with_crash(cfg, at_step=12)
    checkpoint.digest_path(rdir / "ckpt.pt").write_bytes(b"\x80\x81\x82")
    with pytest.warns(UserWarning, match="resuming from the previous checkpoint"):
        summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["final"] == reference["final"]
    assert json.loads((rdir / "summary.json").read_text())["status"] == "completed"


def run_with_crash(cfg, at_step: int):
    """Train until `at_step`, then raise (a node lost), leaving checkpoints behind."""
    from tasks.train import loop

    original = loop.Trainer.train_step

    def crashing(self, step, time_optimizer=True):
        if step == at_step:
            raise RuntimeError("node lost")
        return original(self, step, time_optimizer)

    loop.Trainer.train_step = crashing
    try:
        run(cfg)
    finally:
        loop.Trainer.train_step = original
