"""Every optimizer honours torch.optim's contract: resume exactly from a state_dict, bf16
parameters, closures, LR schedulers, clear errors for bad hyperparameters, and it trains."""

import copy
import math

import pytest
import torch
import torch.nn as nn

import optim
from optim import ours
from optim.registry import TEST_STEPS
from tasks.train.config import ConfigError, validate_optim

STEPS = TEST_STEPS
# Constructor arguments per optimizer, from the registry: schedules short enough that a resume
# at step 12 falls before Soft*'s switch (step 12 of 24) and SMuon re-selects p after it.
CASES = {spec.name: (spec.cls, spec.example) for spec in ours()}


class Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 8)
        self.hidden = nn.Linear(8, 16)
        self.hidden2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 1)
        self.to(dtype)

    def forward(self, idx):
        h = torch.tanh(self.hidden(self.emb(idx)))
        return self.head(torch.tanh(self.hidden2(h))).squeeze(-1)


def batch(step):
    g = torch.Generator().manual_seed(step)
    idx = torch.randint(0, 10, (32,), generator=g)
    return idx, torch.sin(idx.float())


def make(name, model):
    cls, kw = CASES[name]
    opt = cls(optim.param_groups(model, optim.is_matrix_optimizer(cls)), **kw)
    if hasattr(opt, "attach"):
        opt.attach(model)
    return opt


def train(model, opt, steps, start=0):
    losses = []
    for step in range(start, start + steps):
        idx, y = batch(step)

        def closure():
            opt.zero_grad()
            loss = ((model(idx).float() - y) ** 2).mean()
            loss.backward()
            return loss

        losses.append(float(opt.step(closure).detach()))
    return losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_continues_exactly(name):
    model = Net()
    opt = make(name, model)
    train(model, opt, STEPS // 2)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    straight = train(model, opt, STEPS // 2, start=STEPS // 2)

    resumed_model = Net()
    resumed_model.load_state_dict(saved_model)
    resumed_opt = make(name, resumed_model)
    resumed_opt.load_state_dict(saved_opt)
    resumed = train(resumed_model, resumed_opt, STEPS // 2, start=STEPS // 2)
    assert resumed == straight
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_a_small_model(name):
    model = Net()
    losses = train(model, make(name, model), 60)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses[::10]
    assert all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_parameters_keep_fp32_state(name):
    model = Net(torch.bfloat16)
    opt = make(name, model)
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt, 3)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert any(moved)
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.numel() > 1:
                assert value.dtype == torch.float32, (name, value.dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_works_under_a_torch_lr_scheduler(name):
    model = Net()
    opt = make(name, model)
    peak = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 ** (k + 1))
    train(model, opt, 1)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.25 * x for x in peak]


BAD = [
    (optim.S3, {"lr": -1}, "lr"),
    (optim.S3, {"p": 0.5}, "p"),
    (optim.S3, {"beta": 1.0}, "beta"),
    (optim.S3, {"beta2": -0.1}, "beta2"),
    (optim.Signum, {"beta": 1.5}, "beta"),
    (optim.Lion, {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    (optim.Adan, {"betas": (0.9, 0.9)}, "betas"),
    (optim.SoftSignum, {"total_steps": None}, "total_steps"),
    (optim.SoftSignum, {"total_steps": 10, "sign_fraction": 1.5}, "sign_fraction"),
    (optim.SoftSignum, {"total_steps": 10, "momentum": 1.0}, "momentum"),
    (optim.SoftMuon, {"total_steps": 0}, "total_steps"),
    (optim.StochasticSign, {"base": "rmsprop"}, "base"),
    (optim.StochasticSign, {"envelope": "min"}, "envelope"),
    (optim.SMuon, {"moment_type": "lamb"}, "moment_type"),
    (optim.SMuon, {"p_min": 0.5}, "p_min"),
    (optim.SMuon, {"fixed_p": 0.5}, "fixed_p"),
    (optim.SMuon, {"pin": "frobenius"}, "pin"),
    (optim.SMuon, {"pin": "none"}, "pin"),  # moment_type none has no unpinned scale
    (optim.SMuon, {"kappa_regime": "quiet"}, "kappa_regime"),
    (optim.Muon, {"momentum": -0.1}, "momentum"),
    (optim.Muon, {"aux_betas": (0.9, 1.0)}, "aux_betas"),
    (optim.MuAdam, {"lr": -0.1}, "lr"),
    (optim.MuAdam, {"orthogonalizer": "svd"}, "orthogonalizer"),
    (optim.MuAdam, {"ns_steps": 7}, "ns_steps"),  # Polar Express has a five-step schedule
    (optim.StoSignSGD, {"weight_decay": -1}, "weight_decay"),
]


@pytest.mark.parametrize("cls,kwargs,arg", BAD)
def test_invalid_hyperparameters_name_the_argument(cls, kwargs, arg):
    with pytest.raises(ValueError, match=rf"Invalid {arg}"):
        cls([nn.Parameter(torch.zeros(3, 3))], **kwargs)
    # a run's config check (which constructs it on a throw-away model) catches it too
    cfg = {"_target_": f"optim.{cls.__name__}", "_partial_": True, "name": "x", "lr": 1e-3,
           **({"total_steps": 10} if cls in (optim.SoftSignum, optim.SoftMuon) else {}),
           **kwargs}
    with pytest.raises(ConfigError, match=rf"Invalid {arg}|optim\.{arg}"):
        validate_optim(cfg)


def test_muon_family_routes_matrices_and_aux_groups():
    model = Net()
    groups = optim.param_groups(model, matrix_optimizer=True)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"matrix", "embedding", "head", "norm_or_bias"}
    assert {id(p) for p in by_name["matrix"]["params"]} == {id(model.hidden.weight),
                                                            id(model.hidden2.weight)}
    opt = optim.Muon(groups, lr=0.02, aux_lr=1e-3, aux_weight_decay=0.1)
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert lrs == {"matrix": (0.02, 0.0), "embedding": (1e-3, 0.1), "head": (1e-3, 0.1),
                   "norm_or_bias": (1e-3, 0.0)}


def test_plain_parameter_list_is_split_by_dimension():
    model = Net()
    opt = optim.Muon(model.parameters())
    kinds = sorted((g["use_matrix"], len(g["params"])) for g in opt.param_groups)
    assert kinds == [(False, 3), (True, 4)]  # biases | emb, hidden, hidden2, head weights


def test_smuon_records_per_layer_p_from_activation_hooks():
    model = Net()
    opt = make("smuon", model)
    train(model, opt, 9)
    p = opt.p_per_layer()
    assert set(p) == {"hidden.weight", "hidden2.weight"}
    assert all(1.02 <= v <= 10.0 for v in p.values())
    assert any(v < 10.0 for v in p.values())  # selection at step 5 moved off the initial p_max
