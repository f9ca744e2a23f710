"""The SMuon authors' Muon-limitations problem (tasks/deep_linear.py): the teacher's spectrum,
the student's shape and roles, and the loss."""

import torch

from optim.routing import param_roles
from tasks.deep_linear import DeepLinearTask


def test_teacher_student_and_loss_are_the_scripts():
    task = DeepLinearTask(seed=42, device=torch.device("cpu"), data_root="unused", depth=3,
                          in_dim=20, out_dim=12, width=16, n_samples=50, alpha=1.5)
    s = torch.linalg.svdvals(task.teacher)
    assert torch.allclose(s, torch.arange(1, 13).float() ** -1.5, atol=1e-5)
    assert torch.allclose(task.targets, task.inputs @ task.teacher.T)
    shapes = [tuple(p.shape) for p in task.model.parameters()]
    assert shapes == [(16, 20), (16, 16), (12, 16)]  # bias-free, depth 3
    assert set(param_roles(task.model).values()) == {"matrix"}  # first and last layer too
    x = task.inputs
    for w in task.model.parameters():
        x = x @ w.T
    want = ((x - task.targets) ** 2).mean()
    assert torch.allclose(task.loss(task.model, task.train_batch(1, 0)), want)
    again = DeepLinearTask(seed=42, device=torch.device("cpu"), data_root="unused", depth=3,
                           in_dim=20, out_dim=12, width=16, n_samples=50, alpha=1.5)
    other = DeepLinearTask(seed=43, device=torch.device("cpu"), data_root="unused", depth=3,
                           in_dim=20, out_dim=12, width=16, n_samples=50, alpha=1.5)
    assert torch.equal(again.teacher, task.teacher) and not torch.equal(other.teacher, task.teacher)
    assert torch.equal(next(again.model.parameters()), next(task.model.parameters()))
