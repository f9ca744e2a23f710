"""StoSignSGD's non-smooth convex claim, in miniature: SignSGD stalls a fixed distance away,
the unbiased stochastic sign converges."""

import pytest
import torch

from tasks import run
from tasks.nonsmooth import NonSmoothTask
from tests.conftest import compose_cfg

COMMON = ["task=nonsmooth", "optim.lr=0.01", "optim.weight_decay=0", "steps=1000",
          "eval_every=1000", "log_every=100", "grad_clip=null", "progress=false"]


def test_subgradient_is_unbiased_but_its_sign_is_not():
    task = NonSmoothTask(seed=0, device=torch.device("cpu"), data_root="", dim=20000)
    task.model.x.data.fill_(0.5)
    task.loss(task.model, task.train_batch(0, 0)).backward()
    g = task.model.x.grad * task.dim  # per-coordinate subgradients
    assert g.mean().item() == pytest.approx(0.3 * 10 - 0.7, abs=0.15)  # E[g] > 0: go to a
    assert g.sign().mean().item() == pytest.approx(0.3 - 0.7, abs=0.03)  # E[sign g] < 0


@pytest.mark.parametrize("optim,stalls", [("signsgd", True), ("stosignsgd", False),
                                          ("signum", False)])
@pytest.mark.slow
def test_signsgd_stalls_where_unbiased_signs_converge(tmp_path, optim, stalls):
    summary = run(compose_cfg([*COMMON, f"optim={optim}"], runs_root=tmp_path))
    distance = summary["final"]["distance"]
    if stalls:
        assert distance > 0.9  # parked at b = 1, a fixed distance from the optimum a = 0
        assert summary["convergence"]["steps_to_target"] is None
    else:
        assert distance < 0.05
        assert summary["convergence"]["steps_to_target"] == 1000
