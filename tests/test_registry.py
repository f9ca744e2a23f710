"""optim.REGISTRY is the one list of optimizers: it matches conf/optim/*.yaml one to one, each
config's values are its class's defaults unless the registry says why not, and what it states
about each optimizer (state buffers, fused, matrix) is what the optimizer does."""

import inspect

import pytest
import torch
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import OmegaConf

import optim
from optim import REGISTRY, readme_table
from tests.conftest import ROOT

OPTIM_DIR = ROOT / "conf" / "optim"


def config(name: str) -> dict:
    """conf/optim/<name>.yaml with the run-level interpolations filled in."""
    cfg = OmegaConf.load(OPTIM_DIR / f"{name}.yaml")
    return OmegaConf.to_container(OmegaConf.merge({"steps": 24, "seed": 0}, {"o": cfg}),
                                  resolve=True)["o"]


def test_one_registry_entry_per_config_file():
    assert sorted(s.name for s in REGISTRY) == sorted(p.stem for p in OPTIM_DIR.glob("*.yaml"))
    for spec in REGISTRY:
        cfg = config(spec.name)
        assert cfg["name"] == spec.name and cfg["_target_"] == spec.target, spec.name


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_config_values_are_the_class_defaults_unless_the_registry_says_why(spec):
    cfg = OmegaConf.to_container(OmegaConf.load(OPTIM_DIR / f"{spec.name}.yaml"))
    defaults = {k: p.default for k, p in inspect.signature(spec.cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    differs = set()
    for key, value in cfg.items():
        if key in ("name", "_target_", "_partial_"):
            continue
        assert key in defaults, f"{spec.name}: {key} is not a constructor argument"
        default = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
        if value != default:
            differs.add(key)
    assert differs == set(spec.config_differs), (
        f"{spec.name}: differs from the class in {sorted(differs)}, the registry explains "
        f"{sorted(spec.config_differs)}")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, idx):
        return self.head(torch.tanh(self.hidden(self.emb(idx)))).squeeze(-1)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_what_the_registry_says_of_each_optimizer_holds(spec):
    model = Net()
    factory = instantiate({k: v for k, v in config(spec.name).items() if k != "name"})
    assert optim.is_matrix_optimizer(factory) == spec.matrix
    if spec.ours:  # torch's own take `fused` too: their kernels are torch's to test
        assert ("fused" in inspect.signature(spec.cls).parameters) == spec.fused
    opt = factory(optim.param_groups(model, spec.matrix))
    for _ in range(2):
        opt.zero_grad()
        model(torch.arange(10)).pow(2).mean().backward()
        opt.step()
    w = model.hidden.weight  # a hidden matrix: the main update in every optimizer
    buffers = [v for v in opt.state[w].values() if torch.is_tensor(v) and v.shape == w.shape]
    assert len(buffers) == spec.state_buffers


def test_the_readme_table_is_the_registry():
    """Every row of the README's table is the registry's row: the README may lag behind a new
    entry (regenerate it with `python -c "import optim; print(optim.readme_table())"`)
    but never says what the registry does not."""
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and "` | `" in line]
    generated = readme_table().splitlines()
    assert rows and all(row in generated for row in rows), set(rows) - set(generated)
