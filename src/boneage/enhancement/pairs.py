"""Training pairs for the enhancement GAN, made honestly from what we have.

The paper's gold standard was 500 hand images whose contrast, brightness and sharpness a
person adjusted by hand (section 3.3). We have no such targets, so a pair is made the other
way round: the *target* is a radiograph as it is (a real RSNA image after the recipe's
preprocessing, or a clean synthetic radiograph), and the *input* is a copy degraded by the
recipe's ``gan.degrade`` steps (contrast and brightness windows, gamma, blur, noise). The
generator therefore learns to undo acquisition variation back to the look of the training
films; it cannot learn any enhancement beyond them. Flips and rotations (the recipe's
``augment`` steps) act on the target before it is degraded, so both images of a pair turn
together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from boneage.data.synthetic import sample_radiographs
from boneage.errors import ConfigError
from boneage.transforms import Transform

__all__ = ["EnhancementPairs", "synthetic_targets", "check_same_size"]


class EnhancementPairs(Dataset):
    """(degraded input, target) pairs over fixed target images.

    Every draw (geometric augmentation, degradation) comes from a generator seeded by
    (seed, epoch, index), so a run is reproducible and each epoch sees new degradations.
    A validation set uses ``augment=None`` and never calls :meth:`set_epoch`: its inputs
    are the same every epoch.
    """

    def __init__(self, targets: Sequence[np.ndarray], degrade: Transform,
                 augment: Transform | None = None, seed: int = 0):
        self.targets = list(targets)
        self.degrade, self.augment, self.seed = degrade, augment, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items' augmentation and degradation from ``epoch``'s generators."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.targets)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) of item ``i`` as float32 [0, 1] arrays."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        target = np.asarray(self.targets[i], dtype=np.float32)
        if self.augment is not None:
            target = self.augment(target, rng)
        target = np.clip(target, 0.0, 1.0).astype(np.float32)
        degraded = np.clip(self.degrade(target, rng), 0.0, 1.0).astype(np.float32)
        return degraded, target

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.pair(i)
        return {"input": torch.from_numpy(x)[None], "target": torch.from_numpy(y)[None]}


def synthetic_targets(n: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    """``n`` clean synthetic radiographs (no markers, rotation or noise) of ``shape``."""
    if n < 0:
        raise ConfigError(f"gan.synthetic must be >= 0, got {n}")
    return [s.image.astype(np.float32) for s in sample_radiographs(n, size=shape, seed=seed, nuisance=False)]


def check_same_size(images: Sequence[np.ndarray]) -> tuple[int, int]:
    """The one (H, W) every image has; pairs are batched, so sizes must agree."""
    shapes = sorted({tuple(img.shape) for img in images})
    if len(shapes) != 1:
        raise ConfigError(f"GAN training needs images of one size, preprocessing gives {shapes[:3]}; "
                          "end preprocess with a resize step")
    h, w = shapes[0]
    if min(h, w) < 8:
        raise ConfigError(f"GAN training needs images of at least 8x8 pixels, preprocessing gives {h}x{w}")
    return h, w
