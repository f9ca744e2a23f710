"""CIFAR task: the real loader on files in CIFAR's own format, long-tail counts, batch
augmentation, and the tiny preset learning."""

import numpy as np
import pytest
import torch

from optim import infer_roles
from tasks import run
from tasks.cifar import CifarTask, data
from tasks.cifar.models import build_model
from tasks.train import identity
from tests.conftest import compose_cfg


def write_fake_cifar(root, dataset, per_batch=30):
    folder_name, train_files, test_files, label_key, classes = data.LAYOUT[dataset]
    rng = np.random.default_rng(0)
    written = {}
    for name in train_files + test_files:
        x = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, classes, size=per_batch)
        data.write_batches(root / dataset / folder_name, name, x, y, label_key)
        written[name] = (x, y)
    return written


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_loader_reads_the_official_pickle_layout(tmp_path, dataset):
    written = write_fake_cifar(tmp_path, dataset)
    x, y, tx, ty, classes = data.load_cifar(tmp_path, dataset)
    _, train_files, test_files, _, n_classes = data.LAYOUT[dataset]
    assert classes == n_classes
    assert np.array_equal(x, np.concatenate([written[f][0] for f in train_files]))
    assert np.array_equal(y, np.concatenate([written[f][1] for f in train_files]))
    assert np.array_equal(tx, written[test_files[0]][0]) and tx.dtype == np.uint8
    assert np.array_equal(ty, written[test_files[0]][1])


def test_missing_dataset_names_the_preparation_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/prepare_data.py cifar10"):
        data.load_cifar(tmp_path, "cifar10")


def test_long_tail_counts_follow_the_formula():
    counts = data.long_tail_counts(5000, 10, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    for c, n in enumerate(counts):
        assert n == int(5000 * 100 ** (-c / 9))
    labels = np.repeat(np.arange(10), 500)
    idx = data.long_tail_indices(labels, 10, 10, seed=0)
    assert np.bincount(labels[idx], minlength=10).tolist() == data.long_tail_counts(500, 10, 10)
    assert len(set(idx.tolist())) == len(idx)


def test_long_tail_task_keeps_a_balanced_test_set(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", per_batch=200)
    task = CifarTask(dataset="cifar10", arch="resnet20", width=0.25, batch_size=8,
                     data_root=str(tmp_path), seed=0, device=torch.device("cpu"), imbalance=10)
    counts = task.info["class_counts"]
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.15)
    assert task.info["test_images"] == 200


def test_augmentation_crops_and_flips_what_it_should():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).reshape(2, 3, 32, 32).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = data.augment(x, gen, pad=0, flip=True)
    for i in range(2):  # each image is either itself or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    # crop: find the offsets by replaying the generator, compare with slicing the padded image
    gen = torch.Generator().manual_seed(1)
    out = data.augment(x, gen, pad=4, flip=False)
    replay = torch.Generator().manual_seed(1)
    dy = torch.randint(0, 9, (2,), generator=replay)
    dx = torch.randint(0, 9, (2,), generator=replay)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32])
    assert out.shape == x.shape and out.dtype == torch.uint8
    cut = data.augment(torch.full((4, 3, 32, 32), 200, dtype=torch.uint8),
                       torch.Generator().manual_seed(2), pad=0, flip=False, cutout=8)
    assert ((cut == 0).flatten(1).sum(1) > 0).all()  # every image got a hole


def test_batches_are_a_function_of_seed_and_step_and_labels_follow_images():
    task = CifarTask(dataset="synthetic", synthetic_size=(600, 100), arch="resnet20",
                     width=0.25, batch_size=50, data_root="unused", seed=3,
                     device=torch.device("cpu"), crop_pad=0, flip=False)
    x1, y1 = task.train_batch(7, 0)
    x2, y2 = task.train_batch(7, 0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # one epoch visits every image once
    seen = torch.cat([task.train_batch(s, 0)[1] for s in range(task.batches_per_epoch)])
    assert len(seen) == 600 and torch.equal(seen.sort().values, task.train_y.sort().values)
    # without augmentation a batch is exactly the normalized stored images
    idx = task._permutation(0)[:50]
    torch.testing.assert_close(task.train_batch(0, 0)[0], task._normalize(task.train_x[idx]))


def test_the_synthetic_set_can_have_more_classes_than_cifar():
    """+task.synthetic_classes: a harder generated set (smuon_cifar's miniature uses 40)."""
    task = CifarTask(dataset="synthetic", synthetic_size=(600, 100), synthetic_classes=40,
                     arch="resnet20", width=0.25, batch_size=32, data_root="unused", seed=0,
                     device=torch.device("cpu"))
    assert task.info["classes"] == 40 and len(task.info["class_counts"]) == 40
    assert int(task.train_y.max()) > 9  # labels beyond CIFAR's ten
    logits = task.model(task.test_x[:2].float())
    assert logits.shape == (2, 40)
    cfg = {"task": {"dataset": "synthetic", "synthetic_size": [600, 100], "imbalance": 1.0,
                    "synthetic_classes": 40}}
    assert CifarTask.train_examples(cfg["task"]) == 600


def test_resnets_and_their_parameter_roles():
    r18 = build_model("resnet18", 10)
    assert 11.0e6 < sum(p.numel() for p in r18.parameters()) < 11.3e6
    r20 = build_model("resnet20", 10)
    assert 0.26e6 < sum(p.numel() for p in r20.parameters()) < 0.28e6
    assert r20(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    roles = infer_roles(r20)
    assert roles["stem.weight"] == "first_conv"
    assert roles["fc.weight"] == "head" and roles["fc.bias"] == "norm_or_bias"
    assert roles["stages.0.conv1.weight"] == "matrix"
    assert roles["bn.weight"] == "norm_or_bias"
    with pytest.raises(ValueError, match="task.arch"):
        build_model("resnet19", 10)


@pytest.mark.slow
def test_tiny_preset_learns_well_above_chance(tmp_path):
    cfg = compose_cfg(["task=cifar_tiny", "steps=150", "eval_every=150", "progress=false",
                       "task.synthetic_size=[3000,500]"], runs_root=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["final"]["test_acc"] > 0.5  # chance is 0.1
    assert summary["task_info"]["data"]["dataset"] == "synthetic"


@pytest.mark.slow
def test_muon_family_trains_a_resnet(tmp_path):
    cfg = compose_cfg(["task=cifar_tiny", "optim=muon", "steps=30", "eval_every=30",
                       "progress=false", "task.synthetic_size=[1000,200]"], runs_root=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "completed"
    assert summary["final"]["train_loss"] < summary["initial"]["train_loss"]


def test_a_crafted_batch_in_a_shared_data_folder_runs_no_code(tmp_path):
    """Data folders are shared on clusters: a batch file that pickles a call (here os.system)
    is refused, naming the file, and the call never happens."""
    import os
    import pickle

    write_fake_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "data" / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    with open(crafted, "wb") as f:
        pickle.dump({b"data": Payload(), b"labels": [0]}, f)
    cfg = compose_cfg(["task=cifar10_resnet18", "task.width=0.25", "task.arch=resnet20",
                       "task.batch_size=4", "steps=1", "progress=false"],
                      runs_root=tmp_path / "runs", data_root=tmp_path / "data")
    refusal = f"{crafted} is not a CIFAR batch and was not loaded: it asks to call posix.system"
    with pytest.raises(Exception, match=refusal):  # Hydra's instantiate wraps it
        run(cfg)
    assert not marker.exists()
    error = (identity.run_dir(cfg) / "error.txt").read_text().splitlines()[0]
    assert error.startswith(f"UnsafeBatch: {refusal}")
    # arrays of the wrong kind are refused too (an object array could hold anything)
    with open(crafted, "wb") as f:
        pickle.dump({b"data": np.array([["x"] * 3072], dtype=object), b"labels": [0]}, f)
    with pytest.raises(data.UnsafeBatch, match="are not uint8 images"):
        data.load_cifar(tmp_path / "data", "cifar10")


def test_a_tiny_batch_that_declares_a_huge_length_is_refused_without_allocating_it(tmp_path):
    """206 bytes that declare a 600 MB bytes object: the unpickler would allocate the length
    before reading; the batch is refused by a walk of its opcodes that reads within the file."""
    import struct
    import tracemalloc

    write_fake_cifar(tmp_path, "cifar10")
    crafted = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    blob = b"\x80\x04\x8e" + struct.pack("<Q", 600_000_000) + b"x" * 195  # BINBYTES8
    crafted.write_bytes(blob)
    assert len(blob) == 206
    tracemalloc.start()
    try:
        with pytest.raises(data.UnsafeBatch, match="opcodes do not fit the file"):
            data.load_cifar(tmp_path, "cifar10")
        assert tracemalloc.get_traced_memory()[1] < 50e6
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("label", [10, -1])
def test_labels_outside_the_datasets_classes_are_refused(tmp_path, label):
    write_fake_cifar(tmp_path, "cifar10")
    x = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    data.write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", "test_batch", x,
                       np.array([0, 1, label, 2]), b"labels")
    with pytest.raises(data.UnsafeBatch, match=r"outside cifar10's classes 0..9"):
        data.load_cifar(tmp_path, "cifar10")
