"""Which parameters go to which optimizer group.

Elementwise optimizers (AdamW, S3, Signum, ...): two groups, nanoGPT-style: tensors with two or
more dimensions get weight decay, vectors (norms, biases) do not.

Matrix optimizers (Muon family): hidden matrices (conv kernels included, flattened to 2-D by the
optimizer) form the matrix group; embeddings, the output head, the first conv and all vectors
go to the auxiliary AdamW, each role in its own group with `use_matrix=False`, so each can carry
its own lr and weight decay.

A model may declare its parameters' roles with `param_roles() -> {name: role}`; otherwise the
roles are inferred from module types and order (see `infer_roles`).
"""

from __future__ import annotations

import torch.nn as nn

ROLES = ("matrix", "embedding", "head", "first_conv", "norm_or_bias")


# Modules whose own ≥2-D parameters are weight matrices; a ≥2-D parameter held by any other
# module (a ViT's position embedding and class token) is an embedding.
WEIGHT_MODULES = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)


def infer_roles(model: nn.Module) -> dict[str, str]:
    """Embeddings by type (or, as free parameters, by holder); the first conv and the last
    Linear (the head) by module order."""
    roles: dict[str, str] = {}
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first_conv = convs[0] if convs else None
    head = linears[-1] if linears else None
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, nn.Embedding) or (
                    p.ndim >= 2 and not isinstance(module, WEIGHT_MODULES)):
                roles[name] = "embedding"
            elif p.ndim < 2:
                roles[name] = "norm_or_bias"
            elif module is first_conv:
                roles[name] = "first_conv"
            elif module is head:
                roles[name] = "head"
            else:
                roles[name] = "matrix"
    return roles


def param_roles(model: nn.Module) -> dict[str, str]:
    roles = model.param_roles() if hasattr(model, "param_roles") else infer_roles(model)
    bad = {r for r in roles.values() if r not in ROLES}
    if bad:
        raise ValueError(f"unknown parameter roles {sorted(bad)}; allowed: {list(ROLES)}")
    return roles


def param_groups(model: nn.Module, matrix_optimizer: bool = False) -> list[dict]:
    """Param groups for `model`; each group has a `name` (shown in logs and state_dicts)."""
    roles = param_roles(model)
    # de-duplicates tied weights; frozen parameters (a LoRA base model) get no group
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, _ in named if n not in roles]
    if missing:
        raise ValueError(f"param_roles() gives no role to {missing}")
    if not matrix_optimizer:
        groups = [
            {"name": "decay", "params": [p for n, p in named if p.ndim >= 2]},
            {"name": "no_decay", "params": [p for n, p in named if p.ndim < 2],
             "weight_decay": 0.0},
        ]
    else:
        groups = [{"name": "matrix", "params": [p for n, p in named if roles[n] == "matrix"],
                   "use_matrix": True}]
        for role in ROLES[1:]:
            group = {"name": role, "params": [p for n, p in named if roles[n] == role],
                     "use_matrix": False}
            if role == "norm_or_bias":
                group["weight_decay"] = 0.0
            groups.append(group)
    return [g for g in groups if g["params"]]


def is_matrix_optimizer(optimizer_factory) -> bool:
    """True for optimizers that route matrices and aux params differently (class attribute)."""
    cls = getattr(optimizer_factory, "func", optimizer_factory)
    return bool(getattr(cls, "matrix_optimizer", False))
