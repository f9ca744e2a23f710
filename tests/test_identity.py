"""Run identity: a run's key changes when, and only when, code that can change its numbers
changes. Edits are made to a copy of optim/ and tasks/ (identity.code_version reads any root)."""

import shutil

import pytest
from omegaconf import OmegaConf

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


@pytest.mark.slow
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


# ---------------------------------------------------------------- no leak across optimizers


def _task_classes() -> set[str]:
    """Every task class a conf/task preset names."""
    targets = {OmegaConf.load(p).get("_target_") for p in (ROOT / "conf" / "task").glob("*.yaml")}
    return targets - {None}  # a preset with a defaults list names its parent's


@pytest.fixture(scope="module")
def every_pairing():
    """{(optimizer config, task class): the part of a run config its code version reads}. A
    run key hashes the resolved config, which no code edit changes, and this code version: a
    key changes exactly when its pairing's version does."""
    import optim

    return {(spec.name, task): {"optim": {"_target_": spec.target}, "task": {"_target_": task}}
            for spec in optim.REGISTRY for task in sorted(_task_classes())}


def pairing_keys(configs: dict, root) -> dict[tuple[str, str], str]:
    reading = identity.Reading(root)
    return {pair: identity.code_version(cfg, root, reading) for pair, cfg in configs.items()}


@pytest.mark.slow
def test_editing_one_optimizer_module_changes_only_its_optimizers_keys_in_every_task(
        copy, every_pairing):
    import optim

    before = pairing_keys(every_pairing, copy)
    assert before == pairing_keys(every_pairing, ROOT)  # the copy is the code
    reading = identity.Reading(ROOT)
    modules = {spec.name: reading.defining_module(spec.target) for spec in optim.ours()}
    assert len(set(modules.values())) >= 7
    for module in sorted(set(modules.values())):
        path = copy / (module.replace(".", "/") + ".py")
        original = path.read_text()
        edit(path, "import torch\n", "import torch\n\n_EDITED = 1\n")
        try:
            after = pairing_keys(every_pairing, copy)
        finally:
            path.write_text(original)
        changed = {pair for pair in before if before[pair] != after[pair]}
        mine = {pair for pair in before if modules.get(pair[0]) == module}
        assert changed == mine, (f"editing {module} changed {sorted(changed - mine)[:4]} "
                                 f"and kept {sorted(mine - changed)[:4]}")


def test_the_fused_kernels_count_for_the_runs_that_execute_them_only(copy, every_pairing):
    """optim/_fused.py computes every fused and every elementwise update (S3, StoSignSGD's
    noise): an edit changes their keys, including SMuon's, which reaches it two imports away
    (optim.smuon → optim._common → optim._fused); torch's AdamW runs never execute it."""
    before = pairing_keys(every_pairing, copy)
    edit(copy / "optim" / "_fused.py", "import torch\n", "import torch\n\n_EDITED = 1\n")
    after = pairing_keys(every_pairing, copy)
    changed = {optim for (optim, _), key in before.items() if after[(optim, _)] != key}
    assert {"s3", "stosignsgd", "stochastic_sign", "smuon"} <= changed
    assert not {"adamw", "adam", "nadam", "sgd"} & changed
    assert "optim._fused" not in identity.NON_COMPUTING


def test_the_code_version_follows_imports_at_any_depth(copy):
    """An edit three imports away from the run's optimizer (a new module the optimizer's
    helper's helper imports) changes the key."""
    cfg = {"optim": {"_target_": "optim.S3"},
           "task": {"_target_": "tasks.nonsmooth.NonSmoothTask"}}
    before = identity.code_version(cfg, copy)
    edit(copy / "optim" / "s3.py", "import torch\n", "import torch\n\nfrom optim import _deep_a\n")
    (copy / "optim" / "_deep_a.py").write_text("from optim import _deep_b\n\nA = _deep_b.B\n")
    (copy / "optim" / "_deep_b.py").write_text("B = 1\n")
    middle = identity.code_version(cfg, copy)
    assert middle != before
    (copy / "optim" / "_deep_b.py").write_text("B = 2\n")
    assert identity.code_version(cfg, copy) != middle
