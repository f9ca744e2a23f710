"""The vision task family: ImageFolder JPEGs prepared into uint8 arrays (the real on-disk
format, written here since nothing can be downloaded), on-device augmentation that a resumed
run repeats, timm models routed for the Muon family, and a run end to end."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from optim.routing import param_roles
from tasks.vision import ImageTask, augment, data
from tests.conftest import ROOT

TINY_VIT = {"patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 3}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder tree of JPEGs of assorted sizes: 3 classes, 4 train and 2 val each."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(["n01440764", "n02102040", "n02979186"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                pixels = np.clip(rng.normal(60 * c + 40, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=95)
    (root / "train" / "n01440764" / "notes.txt").write_text("not an image")
    return root


def test_prepare_writes_torchvision_resize_and_centre_crop(image_folder, tmp_path):
    from PIL import Image
    from torchvision import transforms

    meta = data.prepare_image_folder(image_folder, tmp_path / "imagenette", size=32, resize=36,
                                     workers=1, chunk=5)
    assert meta["classes"] == ["n01440764", "n02102040", "n02979186"]
    assert meta["splits"]["train"]["class_counts"] == [4, 4, 4]
    loaded = data.load(tmp_path / "imagenette")
    assert loaded["train_x"].shape == (12, 32, 32, 3) and loaded["train_x"].dtype == np.uint8
    assert loaded["val_y"].tolist() == [0, 0, 1, 1, 2, 2]
    # the same pixels as torchvision's Resize(36) + CenterCrop(32) on the decoded JPEG
    first = sorted((image_folder / "val" / "n02102040").iterdir())[0]
    with Image.open(first) as image:
        want = np.asarray(transforms.CenterCrop(32)(transforms.Resize(36)(image.convert("RGB"))))
    got = loaded["val_x"][2].astype(int)
    assert np.abs(got - want.astype(int)).mean() < 1.0
    assert meta["fingerprint"] == data.fingerprint(tmp_path / "imagenette")


@pytest.mark.slow
def test_prepare_data_cli_and_a_clear_error_without_a_tree(image_folder, tmp_path):
    script = str(ROOT / "scripts" / "prepare_data.py")
    ok = subprocess.run([sys.executable, script, "imagenette", "--source", str(image_folder),
                         "--data-root", str(tmp_path), "--size", "24", "--resize", "28",
                         "--workers", "2"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "prepared imagenette: {'train': 12, 'val': 6} images of 24 px, 3 classes" in ok.stdout
    bad = subprocess.run([sys.executable, script, "imagenet", "--source", str(tmp_path / "no"),
                          "--data-root", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --source DIR with DIR/train" in bad.stderr


def make_task(**kw):
    args = dict(dataset="synthetic", arch="test_vit", image_size=32, batch_size=8,
                data_root="unused", seed=0, device=torch.device("cpu"),
                synthetic={"classes": 4, "n_train": 64, "n_val": 16, "size": 32},
                crop_scale=(0.35, 1.0), model_kwargs={"img_size": 32, "patch_size": 8})
    return ImageTask(**{**args, **kw})


def test_batches_are_a_function_of_seed_step_and_micro():
    a, b = make_task(), make_task()
    xa, ya = a.train_batch(5, 0)
    xb, yb = b.train_batch(5, 0)  # a second process, as after a resume
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, a.train_batch(6, 0)[0])
    ra = make_task(randaugment={"num_ops": 2, "magnitude": 9})
    rb = make_task(randaugment={"num_ops": 2, "magnitude": 9})
    assert torch.equal(ra.train_batch(3, 0)[0], rb.train_batch(3, 0)[0])
    # one epoch visits every image once
    seen = torch.cat([a.train_batch(s, 0)[1] for s in range(a.batches_per_epoch)])
    assert sorted(seen.tolist()) == sorted(a.train_y.tolist())


def test_random_resized_crop_follows_torchvisions_rule():
    gen = torch.Generator().manual_seed(0)
    boxes = augment.crop_boxes(500, 40, 60, (0.2, 0.6), (3 / 4, 4 / 3), gen)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.min() > 0.18 and area.max() < 0.62  # the scale range, up to rounding
    assert ((w / h) > 0.7).all() and ((w / h) < 1.4).all()
    # a crop of the whole image resizes like F.interpolate
    x = torch.rand(2, 3, 16, 16)
    whole = augment.random_resized_crop(x, 16, torch.Generator().manual_seed(0), (1.0, 1.0),
                                        (1.0, 1.0))
    assert torch.allclose(whole, x, atol=1e-5)


def test_a_vits_embeddings_head_and_patch_conv_go_to_the_aux_optimizer():
    task = make_task(arch="vit_tiny_patch16_224", model_kwargs=TINY_VIT)
    roles = param_roles(task.model)
    assert roles["cls_token"] == roles["pos_embed"] == "embedding"
    assert roles["patch_embed.proj.weight"] == "first_conv" and roles["head.weight"] == "head"
    assert roles["blocks.0.attn.qkv.weight"] == "matrix"
    assert roles["blocks.0.norm1.weight"] == "norm_or_bias"


def test_unknown_arch_names_timms_models():
    with pytest.raises(ValueError, match="not a timm model"):
        make_task(arch="vit_gigantic_by_me")


def test_a_vision_run_trains_and_resumes_end_to_end(tmp_path):
    from hydra import compose, initialize_config_dir

    from tasks.train.runner import run

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=[
            "task=vision_tiny_vit", "optim=smuon", "steps=6", "eval_every=3",
            f"runs_root={tmp_path}", "progress=false", "task.model_kwargs.depth=1",
            "task.synthetic.n_train=256", "task.synthetic.n_val=64", "optim.first_select=2",
            "optim.select_every=3"])
    summary = run(cfg)
    assert summary["status"] == "completed" and 0.0 <= summary["final"]["val_acc"] <= 1.0
    assert summary["task_info"]["data"]["classes"] == 10
