"""CIFAR-10/100 image classification with CIFAR ResNets (balanced or long-tailed)."""

from tasks.cifar.task import CifarTask

__all__ = ["CifarTask"]
