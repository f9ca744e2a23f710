"""The MNIST MLP task (SMuon's p* study): MNIST's own IDX files, read and prepared here from
files the test writes in that format (nothing can be downloaded), and batches that are a
function of (seed, step)."""

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch

from tasks import mnist_mlp
from tests.conftest import ROOT


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "source"
    folder.mkdir()
    for split, n in (("train", 100), ("test", 20)):
        images, labels = mnist_mlp.FILES[split]
        mnist_mlp.write_idx(folder / f"{images}.gz",
                            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        mnist_mlp.write_idx(folder / labels, rng.integers(0, 10, n).astype(np.uint8))
    return folder


def test_idx_files_round_trip_and_bad_ones_are_named(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    mnist_mlp.write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    assert np.array_equal(mnist_mlp.read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    raw = gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == bytes([0, 0, 0x08, 3])  # MNIST's magic: unsigned bytes, 3 dimensions
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad: not an IDX file of unsigned bytes"):
        mnist_mlp.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + np.asarray([5], ">i4").tobytes()
                                     + b"\x01\x02")
    with pytest.raises(ValueError, match="2 values, the header says"):
        mnist_mlp.read_idx(tmp_path / "short")


@pytest.mark.slow
def test_prepare_copies_a_source_folder_and_the_cli_reports_a_missing_file(idx_folder, tmp_path):
    counts = mnist_mlp.prepare_idx_dataset("fashion-mnist", tmp_path / "out", idx_folder)
    assert counts == {"train": 100, "test": 20}
    (idx_folder / "t10k-labels-idx1-ubyte").unlink()
    done = subprocess.run([sys.executable, "scripts/prepare_data.py", "mnist", "--data-root",
                           str(tmp_path / "data"), "--source", str(idx_folder)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "no t10k-labels-idx1-ubyte" in done.stderr


def test_batches_cover_an_epoch_without_repeats_and_depend_on_seed_and_step(idx_folder):
    data_root = idx_folder.parent
    (data_root / "mnist").mkdir()
    for path in idx_folder.iterdir():
        (data_root / "mnist" / path.name).write_bytes(path.read_bytes())

    def task(seed):
        return mnist_mlp.MnistMLPTask(seed=seed, device=torch.device("cpu"),
                                      data_root=str(data_root), hidden=16, batch_size=30)

    a = task(0)
    assert a.batches_per_epoch == 3  # 100 // 30: the partial batch dropped, as the script
    seen = torch.cat([a.train_batch(step, 0)[1] for step in range(3)])
    assert seen.shape == (90,)
    firsts = [a.train_batch(step, 0)[0] for step in range(3)]
    flat = torch.cat([f.reshape(30, -1) for f in firsts])
    assert len({tuple(r.tolist()) for r in flat}) == 90  # no image twice in an epoch
    assert torch.equal(a.train_batch(4, 0)[0], task(0).train_batch(4, 0)[0])
    assert not torch.equal(a.train_batch(4, 0)[0], task(1).train_batch(4, 0)[0])
    x, y = a.train_batch(0, 0)
    assert float(x.min()) == pytest.approx(-1.0)  # (0/255 − 0.1) / 0.1, the script's scaling
    assert a.model(x).shape == (30, 10)
