"""Image classification with timm models on prepared ImageNet / ImageNette / generated sets."""

from tasks.vision.task import ImageTask

__all__ = ["ImageTask"]
