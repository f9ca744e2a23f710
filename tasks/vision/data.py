"""Image datasets for the vision tasks, prepared once into uint8 arrays a GPU can be fed from.

`prepare_image_folder` reads an ImageFolder tree (`<src>/train/<class>/*.JPEG`,
`<src>/val/<class>/*`; ImageNet's and ImageNette's own layout) and writes, per split, every
image resized (shorter side to `resize`) and centre-cropped to `size`×`size`, as
`<dst>/<split>_images.npy` (N, size, size, 3; uint8, read by memory map) and
`<dst>/<split>_labels.npy`, plus `meta.json` (classes, counts, sizes, a fingerprint). Decoding
JPEGs once, not every epoch, is what lets a 2-core login node or a GPU node with few CPUs feed
the GPU: a training step gathers a batch of fixed-size uint8 images and augments it on the device
(tasks/vision/augment.py).

`synthetic` makes a learnable, non-trivial image set of the same format for tests and the tiny
scales (nothing can be downloaded there).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# Published sizes (train / val images, classes), for epoch-based run lengths and the plan.
DATASETS = {
    "imagenet": {"train": 1_281_167, "val": 50_000, "classes": 1000,
                 "source": "the ILSVRC-2012 ImageFolder tree (train/ and val/ by class)"},
    "imagenette": {"train": 9_469, "val": 3_925, "classes": 10,
                   "source": "imagenette2 from github.com/fastai/imagenette (train/ and val/)"},
}
SPLITS = ("train", "val")
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as timm and torchvision use them
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def files(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """([(image path, class index)], class names): classes are the sorted subfolder names,
    as torchvision's ImageFolder orders them."""
    classes = sorted(d.name for d in Path(folder).iterdir() if d.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} has no class subfolders (expected an ImageFolder "
                                f"tree: {folder}/<class>/<image>)")
    items = [(path, label) for label, name in enumerate(classes)
             for path in sorted((Path(folder) / name).iterdir())
             if path.suffix.lower() in IMAGE_SUFFIXES]
    return items, classes


def load_resized(path: Path, resize: int, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): RGB, shorter side scaled to `resize` (bilinear,
    antialiased), centre crop of `size` (torchvision's Resize + CenterCrop)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size  # torchvision's rounding: the long side truncated, the crop's offset
        if w <= h:         # rounded
            new = (resize, max(size, int(resize * h / w)))
        else:
            new = (max(size, int(resize * w / h)), resize)
        image = image.resize(new, Image.BILINEAR, reducing_gap=None)
        w, h = image.size
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _load_chunk(args) -> np.ndarray:
    paths, resize, size = args
    return np.stack([load_resized(p, resize, size) for p in paths])


def prepare_image_folder(src: Path, dst: Path, size: int, resize: int, workers: int = 1,
                         chunk: int = 256) -> dict:
    """Write the prepared arrays and meta.json of every split of `src`; returns the meta."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    meta = {"size": size, "resize": resize, "source": str(src), "splits": {}}
    for split in SPLITS:
        items, classes = files(src / split)
        if "classes" in meta and classes != meta["classes"]:
            raise ValueError(f"{src}/{split} has classes {classes[:5]}…, unlike train's")
        meta["classes"] = classes
        images = np.lib.format.open_memmap(dst / f"{split}_images.npy.tmp", mode="w+",
                                           dtype=np.uint8, shape=(len(items), size, size, 3))
        jobs = [([p for p, _ in items[i:i + chunk]], resize, size)
                for i in range(0, len(items), chunk)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, block in enumerate(pool.map(_load_chunk, jobs)):
                images[i * chunk:i * chunk + len(block)] = block
        images.flush()
        labels = np.array([label for _, label in items], dtype=np.int64)
        np.save(dst / f"{split}_labels.npy", labels)
        del images
        (dst / f"{split}_images.npy.tmp").rename(dst / f"{split}_images.npy")
        meta["splits"][split] = {"images": len(items),
                                 "class_counts": np.bincount(labels, minlength=len(classes)
                                                             ).tolist()}
    meta["fingerprint"] = fingerprint(dst)
    (dst / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def fingerprint(folder: Path) -> str:
    """A hash of the labels and of a sample of the images: tells prepared sets apart."""
    digest = hashlib.sha1()
    for split in SPLITS:
        labels = np.load(Path(folder) / f"{split}_labels.npy")
        images = np.load(Path(folder) / f"{split}_images.npy", mmap_mode="r")
        digest.update(labels.tobytes())
        digest.update(np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes())
    return digest.hexdigest()[:16]


def is_prepared(folder: Path) -> bool:
    return (Path(folder) / "meta.json").exists()


def load(folder: Path) -> dict:
    """The prepared set: images by memory map (ImageNet does not fit in RAM), labels, meta."""
    folder = Path(folder)
    if not is_prepared(folder):
        raise FileNotFoundError(f"{folder} is not prepared (no meta.json); run "
                                f"`python scripts/prepare_data.py {folder.name} --source DIR`")
    meta = json.loads((folder / "meta.json").read_text())
    out = {"meta": meta}
    for split in SPLITS:
        out[f"{split}_x"] = np.load(folder / f"{split}_images.npy", mmap_mode="r")
        out[f"{split}_y"] = np.load(folder / f"{split}_labels.npy")
    return out


def synthetic(classes: int, n_train: int, n_val: int, size: int, seed: int = 0) -> dict:
    """A generated set in the prepared format: each class a smooth random colour pattern,
    each image its class's pattern shifted, scaled in contrast and buried in noise, so that a
    small model learns it over hundreds of steps without reaching 100%."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    patterns = []
    for _ in range(classes):
        freq, phase = rng.uniform(1, 4, (3, 2)), rng.uniform(0, 2 * np.pi, (3, 2))
        patterns.append(np.stack([np.sin(2 * np.pi * (freq[c, 0] * xx + freq[c, 1] * yy)
                                         + phase[c, 0]) for c in range(3)], -1))
    patterns = np.stack(patterns)

    def make(n):
        labels = rng.integers(0, classes, n)
        shift = rng.integers(-size // 4, size // 4 + 1, (n, 2))
        contrast = rng.uniform(0.3, 1.0, (n, 1, 1, 1))
        base = np.stack([np.roll(patterns[y], tuple(s), (0, 1)) for y, s in zip(labels, shift)])
        x = 0.5 + 0.5 * (contrast * base + rng.normal(0, 0.9, base.shape))
        return (np.clip(x, 0, 1) * 255).astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = make(n_train)
    val_x, val_y = make(n_val)
    meta = {"size": size, "classes": [f"class{i}" for i in range(classes)], "source": "synthetic",
            "splits": {"train": {"images": n_train}, "val": {"images": n_val}}}
    return {"meta": meta, "train_x": train_x, "train_y": train_y, "val_x": val_x,
            "val_y": val_y}
