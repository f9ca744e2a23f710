"""CIFAR ResNets: ResNet-18 with the CIFAR stem (3×3 first conv, no max-pool) and He et al.'s
deep-narrow ResNet-20/32/44/56/110 (three stages of 16/32/64 channels × width).

Parameter roles for the Muon family come from optim.infer_roles: the stem conv is the first
conv, the final Linear the head, BatchNorm weights and biases go to the aux optimizer, every
other conv (shortcuts included) is a hidden matrix.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("resnet18", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: list[int], channels: list[int], num_classes: int):
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels[0])
        stages, c_in = [], channels[0]
        for i, (n, c) in enumerate(zip(blocks_per_stage, channels)):
            for j in range(n):
                stages.append(BasicBlock(c_in, c, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.stages(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def build_model(arch: str, num_classes: int, width: float = 1.0) -> CifarResNet:
    """`width` scales every stage's channels (0.5 halves them)."""
    if arch not in ARCHS:
        raise ValueError(f"task.arch must be one of {list(ARCHS)}, got {arch!r}")
    if width <= 0:
        raise ValueError(f"task.width must be > 0, got {width}")
    if arch == "resnet18":
        blocks, channels = [2, 2, 2, 2], [64, 128, 256, 512]
    else:
        n = (int(arch.removeprefix("resnet")) - 2) // 6
        blocks, channels = [n, n, n], [16, 32, 64]
    return CifarResNet(blocks, [max(1, round(c * width)) for c in channels], num_classes)
