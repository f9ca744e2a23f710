"""Train-time augmentation of a uint8 image batch on its device, each random choice drawn
from a generator keyed by (seed, step, micro), so a resumed run sees the same images.

- `random_resized_crop`: torchvision's RandomResizedCrop (area scale, log-uniform aspect ratio,
  10 tries then the centre crop), every image of the batch cropped and resized in one
  `roi_align` call;
- `flip`: horizontal flip of a random half;
- `rand_augment`: torchvision's RandAugment (num_ops operations of the given magnitude) per
  image, the operations drawn from the image's own seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes x0, y0, x1, y1 in pixels, RandomResizedCrop's rule per image."""
    boxes = torch.empty(n, 4)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for i in range(n):
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*scale, generator=gen).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio, generator=gen).item())
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, (1,), generator=gen).item()
                left = torch.randint(0, width - w + 1, (1,), generator=gen).item()
                boxes[i] = torch.tensor([left, top, left + w, top + h])
                break
        else:  # the centre crop at the nearest allowed aspect ratio
            in_ratio = width / height
            w, h = ((width, round(width / ratio[0])) if in_ratio < ratio[0] else
                    (round(height * ratio[1]), height) if in_ratio > ratio[1] else
                    (width, height))
            left, top = (width - w) // 2, (height - h) // 2
            boxes[i] = torch.tensor([left, top, left + w, top + h])
    return boxes


def random_resized_crop(x: torch.Tensor, size: int, gen: torch.Generator,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """x: (n, 3, H, W) float; returns (n, 3, size, size)."""
    from torchvision.ops import roi_align

    n, _, height, width = x.shape
    boxes = crop_boxes(n, height, width, scale, ratio, gen).to(x.device, x.dtype)
    rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes], 1)
    # aligned=True samples pixel centres; sampling_ratio=0 averages ⌈crop/size⌉² bilinear
    # samples per output pixel: an antialiased downscale, plain bilinear when enlarging
    return roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def rand_augment(x: torch.Tensor, gen: torch.Generator, num_ops: int = 2,
                 magnitude: int = 9) -> torch.Tensor:
    """x: (n, 3, H, W) uint8; each image through torchvision's RandAugment with its own seed."""
    from torchvision.transforms import v2

    op = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    seeds = torch.randint(0, 2**62, (x.shape[0],), generator=gen).tolist()
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):  # RandAugment draws from the global generator
        for i, seed in enumerate(seeds):
            torch.manual_seed(seed)
            out[i] = op(x[i])
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of a float batch to size×size (a no-op at that size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)
