"""CIFAR-10/100 on disk (the python-pickle batches of the official archives, as torchvision
extracts them), the long-tailed subset, a learnable synthetic stand-in, and augmentation that
works on whole batches on the device.

    <data_root>/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch}   labels: b"labels"
    <data_root>/cifar100/cifar-100-python/{train, test}                     labels: b"fine_labels"
scripts/prepare_data.py downloads them; training only reads. The pickles are read here rather
than through torchvision's dataset classes, whose checksum check rejects anything but the
official files (tests write small files in the same format), and with an unpickler that admits
only the types a batch holds: a data folder shared on a cluster cannot make training run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


class UnsafeBatch(ValueError):
    """A batch file that is not a CIFAR batch (it asked for code, or holds something else)."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds: dicts, lists, bytes, strings, numbers and numpy
    arrays. A plain `pickle.load` calls whatever callable the file names, so a crafted file in
    a shared data folder would run code as whoever trains; here any other global is refused
    before it is looked up."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafeBatch(f"it asks to call {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def _check_opcodes(blob: bytes) -> None:
    """Walk the pickle's opcodes without running them: every length it declares must lie
    within the file. The unpickler allocates a declared length before it reads (a 206-byte
    file that declares 600 MB allocates 600 MB); this walk reads from memory, never past it."""
    try:
        for _ in pickletools.genops(io.BytesIO(blob)):
            pass
    except ValueError as e:  # "expected N bytes in a bytes8, but only M remain", ...
        raise UnsafeBatch(f"its opcodes do not fit the file ({e})") from None


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 (N, 3, 32, 32), labels as int64) of one batch file, refused with a
    message naming the file when it is not a CIFAR batch."""
    try:
        blob = Path(path).read_bytes()
        _check_opcodes(blob)
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise UnsafeBatch(f"it is not a dict with {b'data'!r} and {label_key!r}")
        images, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
        if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32 \
                or labels.dtype.kind not in "iu" or labels.shape != (len(images),):
            raise UnsafeBatch(f"its arrays are not uint8 images (N, 3072) and N integer labels "
                              f"(got {images.dtype} {images.shape}, {labels.dtype} "
                              f"{labels.shape})")
    except (UnsafeBatch, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UnsafeBatch(f"{path} is not a CIFAR batch and was not loaded: {e}. Replace it "
                          f"with the official file (scripts/prepare_data.py checks its "
                          f"checksum)") from None
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_batches(paths: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(read_batch(path, label_key) for path in paths))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(data_root: str | Path, dataset: str):
    """(train_x, train_y, test_x, test_y, num_classes) from the extracted archive."""
    if dataset not in LAYOUT:
        raise ValueError(f"task.dataset must be one of {list(LAYOUT) + ['synthetic']}, "
                         f"got {dataset!r}")
    folder_name, train_files, test_files, label_key, classes = LAYOUT[dataset]
    folder = Path(data_root).expanduser().absolute() / dataset / folder_name
    missing = [f for f in train_files + test_files if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{dataset} is not prepared under {folder} (missing {missing}); "
                                f"run scripts/prepare_data.py {dataset}")
    train = _read_batches([folder / f for f in train_files], label_key)
    test = _read_batches([folder / f for f in test_files], label_key)
    for (_, labels), files in ((train, train_files), (test, test_files)):
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise UnsafeBatch(f"{folder}: labels of {files} lie outside {dataset}'s classes "
                              f"0..{classes - 1} (found {labels.min()}..{labels.max()}): not "
                              f"{dataset}'s files. Replace them with the official archive "
                              f"(scripts/prepare_data.py {dataset} checks its checksum)")
    return (*train, *test, classes)


def write_batches(folder: Path, name: str, x: np.ndarray, y: np.ndarray, label_key: bytes):
    """One pickle batch in the official layout (what the tests and the synthetic set use)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as f:
        pickle.dump({b"data": x.reshape(len(x), -1), label_key: y.tolist()}, f)


def synthetic(num_classes: int, n_train: int, n_test: int, seed: int = 0, noise: float = 4.0):
    """Learnable 32×32 images: a smooth random template per class, shifted, plus noise."""
    rng = np.random.default_rng(1000 + seed)
    coarse = rng.normal(size=(num_classes, 3, 4, 4))
    templates = coarse.repeat(8, axis=2).repeat(8, axis=3)

    def draw(n):
        y = rng.integers(0, num_classes, n)
        shifts = rng.integers(-3, 4, size=(n, 2))
        x = np.stack([np.roll(templates[c], tuple(s), axis=(1, 2)) for c, s in zip(y, shifts)])
        x = x + rng.normal(scale=noise, size=x.shape)
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y.astype(np.int64)

    return (*draw(n_train), *draw(n_test), num_classes)


def long_tail_counts(n_max: int, num_classes: int, k: float) -> list[int]:
    """Per-class counts falling exponentially from n_max to n_max/k (Cui et al. 2019)."""
    if k < 1:
        raise ValueError(f"task.imbalance must be >= 1, got {k}")
    if num_classes == 1:
        return [n_max]
    return [int(n_max * k ** (-c / (num_classes - 1))) for c in range(num_classes)]


def long_tail_indices(labels: np.ndarray, num_classes: int, k: float, seed: int) -> np.ndarray:
    """Indices of a long-tailed subset with imbalance ratio k (class 0 keeps the most)."""
    n_max = min(int((labels == c).sum()) for c in range(num_classes))
    rng = np.random.default_rng(seed)
    keep = []
    for c, n in enumerate(long_tail_counts(n_max, num_classes, k)):
        idx = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(idx)[:n]))
    return np.concatenate(keep)


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha1(x.tobytes()[: 1 << 20] + y.tobytes()).hexdigest()[:12]


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4, flip: bool = True,
            cutout: int = 0) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding, horizontal flip and optional cutout, for a
    whole uint8 batch (B, 3, 32, 32) at once on its device; randomness from `gen` (CPU)."""
    b, _, h, w = x.shape
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mirror = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    if cutout:
        cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
        cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        hole = ((ys - cy[:, None, None]).abs() <= cutout // 2) & \
               ((xs - cx[:, None, None]).abs() <= cutout // 2)
        x = x.masked_fill(hole[:, None], 0)
    return x
