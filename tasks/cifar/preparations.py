"""`scripts/prepare_data.py cifar10 | cifar100`: the official archives through torchvision
(checksummed), extracted as the pickle batches the CIFAR task reads."""

from __future__ import annotations

from pathlib import Path

from tasks.train.preparation import Preparation


def _cifar(name: str):
    def run(args, root: Path) -> str:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else \
            torchvision.datasets.CIFAR100
        for train in (True, False):  # downloads and extracts the archive once, checks md5
            cls(root=str(root / name), train=train, download=True)
        return f"prepared {name} under {root / name}"
    return run


PREPARATIONS = [Preparation(name, f"{name.upper()} (downloads the official archive)",
                            _cifar(name)) for name in ("cifar10", "cifar100")]
