"""``boneage train-unet``: train the stand-in hand-mask U-Net (for ``unet_crop``) on
synthetic images (the work is :func:`boneage.segmentation.unet.train_hand_unet`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import positive_int, refuse_overwrite
from boneage.segmentation.unet import train_hand_unet


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train-unet`` to its parser ``s``."""
    s.add_argument("output", metavar="OUT.safetensors")
    s.add_argument("--images", type=positive_int, default=256)
    s.add_argument("--size", type=positive_int, default=64)
    s.add_argument("--epochs", type=positive_int, default=15)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Train the U-Net and write its weights; 0."""
    out = refuse_overwrite(args.output, args.force)
    train_hand_unet(n_images=args.images, size=args.size, epochs=args.epochs, seed=args.seed, out=out)
    print(f"wrote hand-segmentation U-Net weights to {out} (trained on synthetic radiographs)")
    return 0
