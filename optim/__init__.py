"""Optimizers of the reproduced papers and their baselines, as torch.optim optimizers.

This package imports nothing of ours: tasks and sweeps depend on it, never the reverse.
`REGISTRY` maps each config name (conf/optim/<name>.yaml) to its class; AdamW, Adam, NAdam and
SGD are torch.optim's own.
"""

import torch

from optim.adan import Adan
from optim.muon import MatrixOptimizer, MuAdam, Muon, SoftMuon
from optim.routing import infer_roles, is_matrix_optimizer, param_groups, param_roles
from optim.s3 import S3
from optim.sign import Lion, SignSGD, Signum
from optim.smuon import SMuon
from optim.softsign import HardSwitchSign, SoftSignum
from optim.stosign import StochasticSign, StoSignSGD

REGISTRY = {
    "s3": S3,
    "softsignum": SoftSignum,
    "softmuon": SoftMuon,
    "stosignsgd": StoSignSGD,
    "stochastic_sign": StochasticSign,
    "smuon": SMuon,
    "muadam": MuAdam,
    "muon": Muon,
    "signum": Signum,
    "signsgd": SignSGD,
    "lion": Lion,
    "adan": Adan,
    "hardswitchsign": HardSwitchSign,
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "nadam": torch.optim.NAdam,
    "sgd": torch.optim.SGD,
}

__all__ = [
    "Adan", "HardSwitchSign", "Lion", "MatrixOptimizer", "MuAdam", "Muon", "REGISTRY", "S3",
    "SMuon", "SignSGD", "Signum", "SoftMuon", "SoftSignum", "StoSignSGD", "StochasticSign",
    "infer_roles", "is_matrix_optimizer", "param_groups", "param_roles",
]
