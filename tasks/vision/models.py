"""Vision models from timm, the library vision researchers use: any `timm.create_model` name
(vit_small_patch16_224, resnet50, ...), untrained, with `model_kwargs` passed through (a ViT's
depth, width or patch size for the tiny scale). ViTs are built for the task's image size.

The Muon family routes a ViT's patch embedding (the first conv), position embedding and class
token (free ≥2-D parameters: embeddings), head (the last Linear), norms and biases to its
auxiliary AdamW (optim/routing.py infers those roles from the module types).
"""

from __future__ import annotations

import torch.nn as nn


def build_model(arch: str, classes: int, image_size: int,
                model_kwargs: dict | None = None) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"task.arch {arch!r} is not a timm model; e.g. vit_small_patch16_224, "
                         f"vit_tiny_patch16_224, resnet50, resnet18 (timm.list_models())")
    kwargs = dict(model_kwargs or {})
    if arch.startswith(("vit_", "deit_")):
        kwargs.setdefault("img_size", image_size)
    return timm.create_model(arch, pretrained=False, num_classes=classes, **kwargs)
