"""PyTorch datasets over labelled radiographs, driven by a recipe.

Each image is read and passed through the recipe's deterministic preprocessing exactly once
(crop, resize, CLAHE ...) and kept in memory; augmentation and patch cutting then work on the
cached array, so the input pipeline costs little per sample. Random augmentation draws from a
generator seeded by (seed, epoch, index): a run is reproducible and every epoch differs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from boneage.config import Recipe
from boneage.data.labels import Sample
from boneage.io import read_image
from boneage.transforms import (
    Transform, build_pipeline, canonical_pipeline, network_input, patch_grid, preprocessed_copies,
)


def to_input_tensor(arr: np.ndarray, recipe: Recipe) -> torch.Tensor:
    """Network input tensor from [0, 1] image(s) (..., H, W): :func:`network_input` as a
    tensor, shared by training, batch evaluation and the Predictor so all feed the model alike."""
    return torch.from_numpy(network_input(arr, recipe))


class PreprocessedCache:
    """Read and preprocess every sample once (threads: OpenCV releases the GIL).

    ``images[i]`` is sample ``i`` after the recipe's ``preprocess``; ``extras[i]`` holds its
    further distinct copies from ``inference.preprocess_views`` (usually none for images
    already on the target grid), which prediction pools with it (:meth:`copies`).
    """

    def __init__(self, samples: Sequence[Sample], recipe: Recipe, progress: bool = False,
                 workers: int | None = None):
        pipeline = build_pipeline(recipe.preprocess)
        variants = [build_pipeline(steps) for steps in recipe.inference.preprocess_views]

        def load(sample: Sample) -> list[np.ndarray]:
            # float16 halves the memory of a large cache; [0, 1] values keep ~3 decimal digits.
            copies = preprocessed_copies(read_image(sample.path).pixels, pipeline, variants)
            return [c.astype(np.float16) for c in copies]

        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            it = pool.map(load, samples)
            if progress:
                from tqdm import tqdm
                it = tqdm(it, total=len(samples), desc="preprocess", unit="img", leave=False, disable=None)
            loaded = list(it)
        self.images: list[np.ndarray] = [c[0] for c in loaded]
        self.extras: list[list[np.ndarray]] = [c[1:] for c in loaded]
        self.samples = list(samples)

    #: Files :meth:`save` writes into its folder.
    PIXELS, SHAPES = "pixels.npy", "shapes.npy"

    def save(self, folder: str | os.PathLike) -> None:
        """Write the images to ``folder`` as one flat float16 array and their shapes, so
        that :meth:`load` can memory-map them (processes on one machine then share one copy
        in the page cache instead of each holding its own)."""
        from pathlib import Path

        folder = Path(folder)
        if not self.images:
            raise ValueError("an empty cache has nothing to save")
        shapes = np.array([img.shape for img in self.images], dtype=np.int64)
        flat = np.concatenate([img.ravel() for img in self.images])
        np.save(folder / self.SHAPES, shapes)
        np.save(folder / self.PIXELS, flat.astype(np.float16, copy=False))

    @classmethod
    def load(cls, folder: str | os.PathLike, samples: Sequence[Sample]) -> "PreprocessedCache":
        """The cache :meth:`save` wrote for ``samples``, memory-mapped read-only (the images
        are views into the file, which may be unlinked once mapped)."""
        from pathlib import Path

        folder = Path(folder)
        shapes = np.load(folder / cls.SHAPES)
        flat = np.load(folder / cls.PIXELS, mmap_mode="r")
        if len(shapes) != len(samples) or int(np.prod(shapes, axis=1).sum()) != flat.size:
            raise ValueError(f"the cache in {folder} holds {len(shapes)} images for {len(samples)} samples")
        cache = cls.__new__(cls)
        ends = np.cumsum(np.prod(shapes, axis=1))
        cache.images = [flat[end - int(np.prod(shape)):end].reshape(tuple(shape))
                        for shape, end in zip(shapes, ends)]
        # Only the main process validates (the sole reader of extra copies); it keeps its own.
        cache.extras = [[] for _ in cache.images]
        cache.samples = list(samples)
        return cache

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        return self.images[i].astype(np.float32)

    def copies(self, i: int) -> list[np.ndarray]:
        """Every preprocessed copy of sample ``i`` that prediction sees, the recipe's own first."""
        return [self.image(i)] + [e.astype(np.float32) for e in self.extras[i]]


class _Base(Dataset):
    def __init__(self, cache: PreprocessedCache, indices: Sequence[int], recipe: Recipe,
                 augment: bool, seed: int):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self.recipe = recipe
        self.augment: Transform | None = (
            build_pipeline(recipe.augment.steps, recipe.augment.mode)
            if augment and recipe.augment.steps else None)
        self.canonical: Transform | None = canonical_pipeline(recipe)
        self.seed = seed
        self.epoch = 0
        t = recipe.target
        self.t_mean = 0.0 if t.mean is None else t.mean
        self.t_std = 1.0 if t.std is None else t.std

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (and patch sampling) for a new epoch."""
        self.epoch = epoch

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        return to_input_tensor(arr, self.recipe)

    def _finish(self, img: np.ndarray, i: int) -> torch.Tensor:
        """Augment (training only), apply the canonical preparation, make the tensor."""
        if self.augment is not None:
            img = self.augment(img, self._rng(i))
        if self.canonical is not None:
            img = self.canonical(img)
        return self._tensor(img)

    def _labels(self, k: int) -> dict:
        s = self.cache.samples[k]
        age = float("nan") if s.boneage is None else float(s.boneage)
        return {"sex": torch.tensor(s.sex.flag),
                "age": torch.tensor(age, dtype=torch.float32),
                "target": torch.tensor((age - self.t_mean) / self.t_std, dtype=torch.float32),
                "index": torch.tensor(k)}


class ImageDataset(_Base):
    """Whole preprocessed images (optionally augmented) with sex and scaled target."""

    def __len__(self) -> int:
        return len(self.indices)

    def item_images(self) -> np.ndarray:
        """The cache index of the image behind each item (for label-aware samplers)."""
        return self.indices

    def __getitem__(self, i: int) -> dict:
        k = int(self.indices[i])
        return {"image": self._finish(self.cache.image(k), i), **self._labels(k)}


class PatchDataset(_Base):
    """Grid patches of the cached images.

    With ``samples_per_epoch`` set, each epoch draws that many (image, patch) pairs at random
    from the pool of all patches of all images (the paper's 16,000 per epoch); otherwise every
    patch of every image is used once per epoch.
    """

    def __init__(self, cache, indices, recipe, augment, seed):
        super().__init__(cache, indices, recipe, augment, seed)
        if recipe.patches is None:
            raise ValueError("PatchDataset needs a recipe with a patches section")
        self.n, self.size = recipe.patches.n, recipe.patches.size
        shape = cache.images[int(self.indices[0])].shape if len(self.indices) else (self.size, self.size)
        self.corners = patch_grid(shape, self.n, self.size)  # validates n and size up front
        self.samples_per_epoch = recipe.patches.samples_per_epoch
        self._draw()

    def _draw(self) -> None:
        pool = len(self.indices) * self.n
        if self.samples_per_epoch:
            rng = np.random.default_rng([self.seed, self.epoch, 7919])
            self.pairs = rng.integers(0, pool, size=self.samples_per_epoch)
        else:
            self.pairs = np.arange(pool)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._draw()

    def __len__(self) -> int:
        return len(self.pairs)

    def item_images(self) -> np.ndarray:
        """The cache index of the image behind each item (for label-aware samplers)."""
        return self.indices[np.asarray(self.pairs) // self.n]

    def __getitem__(self, i: int) -> dict:
        img_pos, patch = divmod(int(self.pairs[i]), self.n)
        k = int(self.indices[img_pos])
        r, c = self.corners[patch]
        img = self.cache.image(k)[r:r + self.size, c:c + self.size]
        return {"image": self._finish(img, i), **self._labels(k)}


def training_dataset(cache, indices, recipe, seed) -> Dataset:
    """The training dataset a recipe asks for: patches or whole images, augmented."""
    if recipe.patches is not None:
        return PatchDataset(cache, indices, recipe, augment=True, seed=seed)
    return ImageDataset(cache, indices, recipe, augment=True, seed=seed)
