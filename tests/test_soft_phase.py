"""The soft-phase probe (optim/soft_phase.py) reads back from the parameters what SoftSignum's
and SoftMuon's soft sign did, and agrees with the soft sign computed from the optimizer's own
inputs; scripts/soft_phase.py names a bad table row before it trains anything."""

import sys

import pytest
import torch

import optim
from optim.muon import SoftMuon
from optim.soft_phase import LINEAR, Probe
from optim.softsign import SoftSignum, momentum_direction
from optim.spectral import newton_schulz5, soft_sign_matrix
from tests.conftest import load_script

STEPS = 10  # sign_fraction 0.5: steps 6-10 are soft


def grads(step: int, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randn(shape, generator=g) * torch.rand(shape, generator=g) ** 3


def shares(magnitudes: torch.Tensor, eps: float, slack: float = 0.0):
    """(unsaturated, linear, from_sign) of soft-sign magnitudes; with `slack`, the shares of
    the entries below each threshold minus and plus it (a step read back from the parameters,
    (θ − θ')/lr, is exact to about 1e-5: an entry that close to a threshold may read either
    way)."""
    def share(threshold):
        return tuple(float((magnitudes < threshold + d).float().mean())
                     for d in ((-slack, slack) if slack else (0.0,)))
    return share(1 - eps), share(LINEAR), float((1 - magnitudes).mean())


@pytest.mark.parametrize("tau_max", [20.0, 1e9], ids=["official-clamp", "unclamped"])
def test_softsignum_steps_are_read_as_its_tanh_of_the_momentum(tau_max):
    """Per soft step: the shares of |tanh(τ·u)| computed from the momentum before the step
    (independently of the probe), with weight decay undone."""
    p = torch.nn.Parameter(torch.randn(64, 32))
    opt = SoftSignum([p], lr=0.01, total_steps=STEPS, sign_fraction=0.5, tau_max=tau_max,
                     weight_decay=0.1)
    group, expected = opt.param_groups[0], []
    with Probe().installed() as probe:
        for step in range(1, STEPS + 1):
            p.grad = grads(step, p.shape)
            buf = opt.state[p].get("momentum_buffer")
            first = torch.tensor(float(buf is None))
            _, u = momentum_direction(buf if buf is not None else p.grad, p.grad, first,
                                      momentum=group["momentum"], dampening=0.0,
                                      nesterov=group["nesterov"])
            opt.step()
            if step > STEPS // 2:
                tau = group["tau_schedule"][min(step - 1 - STEPS // 2,
                                                len(group["tau_schedule"]) - 1)]
                expected.append((tau, shares(torch.tanh(tau * u).abs(), group["eps"],
                                             slack=1e-4)))
    assert [s.step for s in probe.steps] == list(range(STEPS // 2 + 1, STEPS + 1))
    assert [s.soft_step for s in probe.steps] == list(range(STEPS // 2))
    for s, (tau, (unsaturated, linear, from_sign)) in zip(probe.steps, expected, strict=True):
        assert s.tau == pytest.approx(tau)
        assert unsaturated[0] <= s.unsaturated <= unsaturated[1]
        assert linear[0] <= s.linear <= linear[1]
        assert s.from_sign == pytest.approx(from_sign, abs=1e-4)
        assert s.from_newton_schulz is None
    assert all(1.0 <= s.tau <= tau_max for s in probe.steps)


def test_softmuon_steps_are_read_as_its_spectral_soft_sign(monkeypatch):
    """τσ/√(1 + τ²σ²) of the momentum matrix the soft sign was given (the exact map, also
    where the step took the fast path); the auxiliary Adam group (a bias) is not measured."""
    given = []
    soft_sign = SoftMuon._soft_sign

    def recording(group, us, tau):
        given.append((tau, [u.detach().clone() for u in us]))
        return soft_sign(group, us, tau)

    monkeypatch.setattr(SoftMuon, "_soft_sign", staticmethod(recording))
    model = torch.nn.Linear(24, 16)
    groups = [{"params": [model.weight], "use_matrix": True},
              {"params": [model.bias], "use_matrix": False}]
    opt = SoftMuon(groups, lr=0.01, total_steps=STEPS, sign_fraction=0.5, weight_decay=0.1)
    with Probe().installed() as probe:
        for step in range(1, STEPS + 1):
            model.weight.grad = grads(step, model.weight.shape)
            model.bias.grad = grads(100 + step, model.bias.shape)
            opt.step()
    assert len(probe.steps) == len(given) == STEPS // 2
    assert {s.group for s in probe.steps} == {next(
        i for i, g in enumerate(opt.param_groups) if g.get("use_matrix"))}
    for s, (tau, [u]) in zip(probe.steps, given, strict=True):
        left, sigma, right_t = torch.linalg.svd(u.double(), full_matrices=False)
        soft = torch.linalg.svdvals(soft_sign_matrix(u.double(), tau))  # monotone in σ
        # the sign phase's step, Muon's Newton-Schulz on the same u in fp64, read along u's
        # singular directions (its response is not monotone in σ: sorting would mispair)
        ns = newton_schulz5(u.double(), dtype=torch.float64)
        muon = torch.einsum("ik,ij,jk->k", left, ns, right_t.mT)
        assert s.tau == tau
        unsaturated, linear, from_sign = shares(soft.float(), opt.param_groups[0]["eps"],
                                                slack=1e-4)
        assert unsaturated[0] <= s.unsaturated <= unsaturated[1]
        assert linear[0] <= s.linear <= linear[1]
        assert s.from_sign == pytest.approx(from_sign, abs=1e-4)
        assert s.from_newton_schulz == pytest.approx(float((soft - muon).abs().mean()),
                                                     abs=1e-4)


def test_the_probe_measures_nothing_outside_a_soft_phase_and_is_removed():
    p = torch.nn.Parameter(torch.randn(8))
    signum = optim.BY_NAME["signum"].cls([p], lr=0.01)
    soft = SoftSignum([torch.nn.Parameter(torch.randn(8))], lr=0.01, total_steps=4,
                      sign_fraction=0.5)
    probe = Probe()
    with probe.installed():
        for _ in range(2):
            p.grad = torch.randn(8)
            signum.step()
            soft.param_groups[0]["params"][0].grad = torch.randn(8)
            soft.step()  # steps 1, 2: the sign phase
    assert probe.steps == []
    soft.param_groups[0]["params"][0].grad = torch.randn(8)
    soft.step()  # step 3 is soft, but the probe is gone
    assert probe.steps == []


def _script():
    return load_script("soft_phase")


@pytest.mark.parametrize("row,named", [
    ("softsignum α=2", "has no row 'softsignum α=2'; its rows: "),
])
def test_the_script_names_a_row_the_table_lacks_before_training(row, named, monkeypatch,
                                                                 capsys):
    with pytest.raises(ValueError, match=named):
        _script().the_run("softsign_alpha", row, "tiny", None)
    monkeypatch.setattr(sys, "argv", ["soft_phase.py", "softsign_alpha", row])
    assert _script().main() == 2  # the project's code for bad input, as argparse's
    assert named in capsys.readouterr().err


def test_the_script_refuses_a_row_without_a_soft_phase():
    with pytest.raises(ValueError, match="runs signum, not SoftSignum or SoftMuon"):
        _script().the_run("softsign_graph", "signum graph8", "tiny", None)


def test_the_script_writes_under_a_plain_file_name():
    assert _script().file_name("softsignum α=0.9") == "softsignum_alpha0.9"
    assert _script().file_name("softsignum k=10") == "softsignum_k10"
