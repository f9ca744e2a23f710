"""`scripts/prepare_data.py imagenet | imagenette --source DIR`: an ImageFolder tree you have
(nothing is downloaded: ImageNet's licence requires your own copy; ImageNette is fastai's
imagenette2 archive), decoded once into uint8 arrays of resized centre crops,
`<data_root>/<name>/{train,val}_{images,labels}.npy` and `meta.json` (tasks/vision/data.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.train.preparation import Preparation, PreparationError

# (stored crop, shorter side before it): ImageNette as the SMuon authors' Resize(256) +
# CenterCrop(224); ImageNet keeps a 256-px crop for random crops to 224
IMAGE_DEFAULTS = {"imagenet": (256, 292), "imagenette": (224, 256)}


def _arguments(parser) -> None:
    parser.add_argument("--source", type=Path, help="the ImageFolder root (DIR/train, DIR/val)")
    parser.add_argument("--size", type=int, default=None, help="stored centre-crop size")
    parser.add_argument("--resize", type=int, default=None, help="shorter side before the crop")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="decoding processes")


def _images(name: str):
    def run(args, root: Path) -> str:
        from tasks.vision.data import prepare_image_folder

        if args.source is None or not (args.source / "train").is_dir():
            raise PreparationError(f"{name} needs --source DIR with DIR/train and DIR/val class "
                                   f"folders (got {args.source})")
        size, resize = IMAGE_DEFAULTS[name]
        meta = prepare_image_folder(args.source, root / name, args.size or size,
                                    args.resize or resize, workers=args.workers)
        counts = {split: v["images"] for split, v in meta["splits"].items()}
        return (f"prepared {name}: {counts} images of {meta['size']} px, "
                f"{len(meta['classes'])} classes, under {root / name}")
    return run


PREPARATIONS = [Preparation(name, f"{name} from an ImageFolder tree (--source DIR)",
                            _images(name), _arguments) for name in IMAGE_DEFAULTS]
