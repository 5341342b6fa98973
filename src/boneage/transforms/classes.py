"""Parameter-holding transforms, a ``Compose`` and a name registry for recipes.

Each transform is a small class whose ``__call__(image, rng=None)`` applies one function of
:mod:`boneage.transforms.functional`. Classes whose name starts with ``Rand`` draw their
parameters from the ``numpy.random.Generator`` passed in, so a seed reproduces an
augmentation exactly; deterministic transforms ignore ``rng``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from boneage.errors import ConfigError
from boneage.transforms import functional as F


class Transform:
    """Base class: a callable on a 2-D float image."""

    random = False

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    # An unseeded default keeps ad-hoc use convenient; datasets always pass a seeded one.
    return rng if rng is not None else np.random.default_rng()


class Identity(Transform):
    """Returns the image unchanged (the 'no augmentation' option of a pool)."""

    def __call__(self, image, rng=None):
        return image


class CropFractions(Transform):
    """Crop fixed fractions from the top, bottom, left and right."""

    def __init__(self, top: float = 0.0, bottom: float = 0.0, left: float = 0.0, right: float = 0.0):
        self.top, self.bottom, self.left, self.right = top, bottom, left, right
        F.crop_fractions(np.zeros((100, 100), np.float32), top, bottom, left, right)  # validate now

    def __call__(self, image, rng=None):
        return F.crop_fractions(image, self.top, self.bottom, self.left, self.right)


class Resize(Transform):
    """Resize to ``size`` by squashing or by keeping the aspect ratio and padding."""

    def __init__(self, size: int | Sequence[int], mode: str = "squash", pad_value: float = 0.0):
        if mode not in F.RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {F.RESIZE_MODES}, got {mode!r}")
        F._as_size(size)
        self.size, self.mode, self.pad_value = size, mode, pad_value

    def __call__(self, image, rng=None):
        return F.resize(image, self.size, self.mode, self.pad_value)


class CLAHE(Transform):
    """Contrast Limited Adaptive Histogram Equalization."""

    def __init__(self, clip_limit: float = 2.0, tile_grid: int = 8):
        if not clip_limit > 0:
            raise ValueError(f"clip_limit must be > 0, got {clip_limit}")
        if int(tile_grid) < 1:
            raise ValueError(f"tile_grid must be >= 1, got {tile_grid}")
        self.clip_limit, self.tile_grid = clip_limit, tile_grid

    def __call__(self, image, rng=None):
        return F.clahe(image, self.clip_limit, self.tile_grid)


class NormalizeMinMax(Transform):
    """Stretch intensities to [0, 1]."""

    def __call__(self, image, rng=None):
        return F.normalize_minmax(image)


class Standardize(Transform):
    """Subtract ``mean`` and divide by ``std``."""

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std = mean, std

    def __call__(self, image, rng=None):
        return F.standardize(image, self.mean, self.std)


class HFlip(Transform):
    """Deterministic left-right mirror (used for flip test-time augmentation)."""

    def __call__(self, image, rng=None):
        return F.hflip(image)


class RandHFlip(Transform):
    """Mirror left-right with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5):
        _check_prob(p)
        self.p = p

    def __call__(self, image, rng=None):
        return F.hflip(image) if _rng(rng).random() < self.p else image


class RandVFlip(Transform):
    """Mirror top-bottom with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5):
        _check_prob(p)
        self.p = p

    def __call__(self, image, rng=None):
        return F.vflip(image) if _rng(rng).random() < self.p else image


class RandRotate(Transform):
    """Rotate by an angle drawn uniformly from [-max_deg, max_deg]."""

    random = True

    def __init__(self, max_deg: float = 30.0, fill: float = 0.0):
        if not 0 <= max_deg <= 180:
            raise ValueError(f"max_deg must be in [0, 180], got {max_deg}")
        self.max_deg, self.fill = max_deg, fill

    def __call__(self, image, rng=None):
        angle = _rng(rng).uniform(-self.max_deg, self.max_deg)
        return F.rotate(image, angle, self.fill)


class RandGaussianBlur(Transform):
    """Gaussian blur with sigma drawn uniformly from [sigma_min, sigma_max]."""

    random = True

    def __init__(self, sigma_min: float = 0.2, sigma_max: float = 1.0):
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def __call__(self, image, rng=None):
        return F.gaussian_blur(image, _rng(rng).uniform(self.sigma_min, self.sigma_max))


class RandZoom(Transform):
    """Zoom about the centre by a factor drawn uniformly from [min_factor, max_factor]."""

    random = True

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1, fill: float = 0.0):
        if not 0 < min_factor <= max_factor:
            raise ValueError(f"need 0 < min_factor <= max_factor, got {min_factor}, {max_factor}")
        self.min_factor, self.max_factor, self.fill = min_factor, max_factor, fill

    def __call__(self, image, rng=None):
        return F.zoom(image, _rng(rng).uniform(self.min_factor, self.max_factor), self.fill)


class Compose(Transform):
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)
        self.random = any(getattr(t, "random", False) for t in self.transforms)

    def __call__(self, image, rng=None):
        for t in self.transforms:
            image = t(image, rng)
        return image

    def __len__(self) -> int:
        return len(self.transforms)


class OneOf(Transform):
    """Apply exactly one transform chosen uniformly at random (the paper's augmentation pool)."""

    random = True

    def __init__(self, transforms: Sequence[Callable]):
        if not transforms:
            raise ValueError("OneOf needs at least one transform")
        self.transforms = list(transforms)

    def __call__(self, image, rng=None):
        rng = _rng(rng)
        return self.transforms[int(rng.integers(len(self.transforms)))](image, rng)


def _check_prob(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")


#: Recipe names of transforms; a recipe step is ``{"name": <key>, **params}``.
TRANSFORMS: dict[str, type[Transform]] = {
    "identity": Identity,
    "crop": CropFractions,
    "resize": Resize,
    "clahe": CLAHE,
    "normalize": NormalizeMinMax,
    "standardize": Standardize,
    "hflip": RandHFlip,
    "vflip": RandVFlip,
    "rotate": RandRotate,
    "blur": RandGaussianBlur,
    "zoom": RandZoom,
}


def build_transform(spec: dict[str, Any] | str) -> Transform:
    """Build one transform from a recipe step ``{"name": ..., **params}`` (or just a name)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"a transform step must be a mapping with a 'name', got {spec!r}")
    params = dict(spec)
    name = params.pop("name")
    if name not in TRANSFORMS:
        raise ConfigError(f"unknown transform {name!r}; valid names: {', '.join(sorted(TRANSFORMS))}")
    cls = TRANSFORMS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"transform {name!r} has no parameter(s) {unknown}; allowed: {allowed}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"transform {name!r}: {exc}") from exc


def build_pipeline(steps: Sequence[dict[str, Any] | str], mode: str = "sequential") -> Transform:
    """A ``Compose`` of steps (``mode="sequential"``) or a ``OneOf`` pool (``mode="one_of"``)."""
    transforms = [build_transform(s) for s in steps]
    if mode == "sequential":
        return Compose(transforms)
    if mode == "one_of":
        return OneOf(transforms) if transforms else Compose([])
    raise ConfigError(f"augmentation mode must be 'sequential' or 'one_of', got {mode!r}")


class ConvexHullCrop(Transform):
    """Crop to the hand found by threshold + largest component + convex hull (CH+S+I).

    ``threshold=None`` uses Otsu's threshold; ``margin`` grows the box by that fraction of its
    height/width per side. An image with no foreground passes through whole, with a warning.
    """

    def __init__(self, threshold: float | None = None, margin: float = 0.02):
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be None or in [0, 1], got {threshold}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.threshold, self.margin = threshold, margin

    def __call__(self, image, rng=None):
        # Imported here: boneage.segmentation imports boneage.transforms, so a module-level
        # import would be circular.
        from boneage.segmentation.hull import convex_hull_crop
        return convex_hull_crop(image, threshold=self.threshold, margin=self.margin)


class UNetCrop(Transform):
    """Crop to the hand mask of a trained hand U-Net (U+S+I), stored at ``weights``.

    The file must exist when the transform is built (a recipe naming a missing file fails
    before any training starts); the network itself is loaded on first use, once, so building
    a pipeline stays cheap and worker processes each load their own copy.
    """

    def __init__(self, weights: str, margin: float = 0.02):
        from pathlib import Path

        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not Path(weights).is_file():
            raise ConfigError(f"U-Net weights file not found: {weights}")
        self.weights, self.margin = str(weights), margin
        self._model = None

    def __call__(self, image, rng=None):
        from boneage.errors import BoneAgeError
        from boneage.segmentation.unet import load_hand_unet, unet_crop

        if self._model is None:
            try:
                self._model = load_hand_unet(self.weights)
            except BoneAgeError as exc:
                raise ConfigError(f"cannot load U-Net weights {self.weights}: {exc}") from exc
        return unet_crop(self._model, image, margin=self.margin)


# Registered here rather than in the literal above because the classes are defined after it.
TRANSFORMS["convex_hull_crop"] = ConvexHullCrop
TRANSFORMS["unet_crop"] = UNetCrop
