"""Run identity: a run's key changes when, and only when, code that can change its numbers
changes. Edits are made to a copy of optim/ and tasks/ (identity.code_version reads any root)."""

import shutil

import pytest

from sweeps import spec
from sweeps.compose import compose_runs
from tasks.train import identity
from tests.conftest import ROOT


@pytest.fixture
def copy(tmp_path):
    for package in identity.CODE_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package)
    return tmp_path


def table_keys(name: str, scale: str, root) -> dict[str, str]:
    """{row label + seed + lr: run key} of a table's runs, with the code under `root`."""
    table = spec.load(name).at(scale)
    runs = table.expand(["runs_root=/nowhere"], aux=table.placeholder_aux())
    composed = compose_runs([list(r.overrides) for r in runs], validate_runs=False)
    versions = {}  # one reading of the code per (optimizer, task)

    def code(cfg):
        targets = (cfg["optim"]["_target_"], cfg["task"]["_target_"])
        if targets not in versions:
            versions[targets] = identity.code_version(cfg, root)
        return versions[targets]

    return {f"{r.row.label} {r.lr:g} {r.seed}": identity.run_key(cfg, code=code(cfg))
            for r, (_, cfg) in zip(runs, composed)}


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_a_comment_only_edit_elsewhere_leaves_every_key(copy, scale):
    before = table_keys("stosign_nonsmooth", scale, copy)
    assert before == table_keys("stosign_nonsmooth", scale, ROOT)  # the copy is the code
    lora = copy / "tasks" / "lora" / "task.py"
    edit(lora, '"""LoRA', '"""An edited docstring.\n\nLoRA')
    lora.write_text(lora.read_text() + "\n# a trailing comment\n\n\n")
    edit(copy / "tasks" / "train" / "wandb_mirror.py", "def start_mirror(",
         "def _new_helper():\n    return 1\n\n\ndef start_mirror(")
    edit(copy / "tasks" / "train" / "loop.py", "class Trainer:",
         "class Trainer:  # a comment on the loop itself")
    edit(copy / "optim" / "stosign.py", "import torch\n", "import torch  # why we need torch\n")
    edit(copy / "optim" / "adan.py", "import torch\n", "import torch\n\n_UNUSED = 1\n")
    assert table_keys("stosign_nonsmooth", scale, copy) == before


def test_a_code_edit_to_an_optimizer_changes_exactly_its_rows(copy):
    before = table_keys("stosign_nonsmooth", "tiny", copy)
    edit(copy / "optim" / "stosign.py", "import torch\n", "import torch\n\n_NEW = 2\n")
    after = table_keys("stosign_nonsmooth", "tiny", copy)
    changed = {label.split(" ")[0] for label in before if before[label] != after[label]}
    kept = {label.split(" ")[0] for label in before if before[label] == after[label]}
    # StoSignSGD and the sign-conversion framework share optim/stosign.py; SignSGD and Signum
    # live in optim/sign.py
    assert changed == {"stosignsgd", "stochastic_sign"}
    assert {"signsgd", "signum"} <= kept


def test_a_code_edit_to_the_shared_loop_changes_every_key(copy):
    before = table_keys("stosign_nonsmooth", "tiny", copy)
    edit(copy / "tasks" / "train" / "loop.py", "class Trainer:", "_NEW = 1\n\n\nclass Trainer:")
    after = table_keys("stosign_nonsmooth", "tiny", copy)
    assert all(before[k] != after[k] for k in before)


def test_a_code_edit_to_a_task_changes_the_runs_of_that_task_only(copy):
    nonsmooth = table_keys("stosign_nonsmooth", "tiny", copy)
    gpt = table_keys("quickstart", "tiny", copy)
    edit(copy / "tasks" / "nanogpt" / "model.py", "import torch\n", "import torch\n\n_NEW = 1\n")
    assert table_keys("stosign_nonsmooth", "tiny", copy) == nonsmooth
    after = table_keys("quickstart", "tiny", copy)
    assert all(gpt[k] != after[k] for k in gpt)


def test_the_modules_a_run_executes():
    cfg = {"optim": {"_target_": "optim.StoSignSGD"},
           "task": {"_target_": "tasks.nonsmooth.NonSmoothTask"}}
    modules = identity.code_modules(cfg)
    assert {"optim.stosign", "tasks.nonsmooth", "tasks.train.loop", "tasks.train.assemble",
            "tasks.train.summary", "optim._common"} <= set(modules)
    assert not {"optim.sign", "optim.smuon", "tasks.lora.task", "tasks.train.wandb_mirror",
                "tasks.train.store", "tasks.train.lease"} & set(modules)
    # a library's class: no source of ours for it; the environment records its version
    adamw = identity.code_modules({**cfg, "optim": {"_target_": "torch.optim.AdamW"}})
    assert "optim.stosign" not in adamw and "tasks.train.loop" in adamw


def test_stripped_source_drops_comments_docstrings_and_blank_lines_only():
    text = ('"""module doc"""\nimport x  # why\n\n\ndef f(a):  # c\n    """doc\n    more"""\n'
            '    return a + "# not a comment"\n\ndef g(): """one-liner"""; return 1\n')
    assert identity.stripped_source(text) == (
        'import x\ndef f(a):\n    return a + "# not a comment"\ndef g(): ; return 1')
