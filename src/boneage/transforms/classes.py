"""Parameter-holding transforms, a ``Compose`` and a name registry for recipes.

Each transform is a small class whose ``__call__(image, rng=None)`` applies one function of
:mod:`boneage.transforms.functional`. Classes whose name starts with ``Rand`` draw their
parameters from the ``numpy.random.Generator`` passed in, so a seed reproduces an
augmentation exactly; deterministic transforms ignore ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from boneage import embedded
from boneage.errors import BoneAgeError, ConfigError
from boneage.registry import Registry
from boneage.transforms import functional as F
from boneage.transforms.hull import convex_hull_crop

#: Recipe names of transforms; a recipe step is ``{"name": <key>, **params}``.
TRANSFORMS: Registry = Registry("transform")


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


@TRANSFORMS.register("identity")
class Identity(Transform):
    """Returns the image unchanged (the 'no augmentation' option of a pool)."""

    def __call__(self, image, rng=None):
        return image


@TRANSFORMS.register("crop")
class CropFractions(Transform):
    """Crop fixed fractions from the top, bottom, left and right."""

    def __init__(self, top: float = 0.0, bottom: float = 0.0, left: float = 0.0, right: float = 0.0):
        self.top, self.bottom, self.left, self.right = top, bottom, left, right
        F.crop_fractions(np.zeros((100, 100), np.float32), top, bottom, left, right)  # validate now

    def __call__(self, image, rng=None):
        return F.crop_fractions(image, self.top, self.bottom, self.left, self.right)


@TRANSFORMS.register("resize")
class Resize(Transform):
    """Resize to ``size`` by squashing or by keeping the aspect ratio and padding."""

    def __init__(self, size: int | Sequence[int], mode: str = "squash", pad_value: float = 0.0):
        if mode not in F.RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {F.RESIZE_MODES}, got {mode!r}")
        F._as_size(size)
        self.size, self.mode, self.pad_value = size, mode, pad_value

    def __call__(self, image, rng=None):
        return F.resize(image, self.size, self.mode, self.pad_value)


@TRANSFORMS.register("clahe")
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


@TRANSFORMS.register("normalize")
class NormalizeMinMax(Transform):
    """Stretch intensities to [0, 1]."""

    def __call__(self, image, rng=None):
        return F.normalize_minmax(image)


@TRANSFORMS.register("standardize")
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


@TRANSFORMS.register("hflip")
class RandHFlip(Transform):
    """Mirror left-right with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5):
        _check_prob(p)
        self.p = p

    def __call__(self, image, rng=None):
        return F.hflip(image) if _rng(rng).random() < self.p else image


@TRANSFORMS.register("vflip")
class RandVFlip(Transform):
    """Mirror top-bottom with probability ``p``."""

    random = True

    def __init__(self, p: float = 0.5):
        _check_prob(p)
        self.p = p

    def __call__(self, image, rng=None):
        return F.vflip(image) if _rng(rng).random() < self.p else image


@TRANSFORMS.register("rotate")
class RandRotate(Transform):
    """Rotate by an angle drawn uniformly from [-max_deg, max_deg]."""

    random = True

    def __init__(self, max_deg: float = 30.0, fill: float = 0.0, border: str = "constant"):
        if not 0 <= max_deg <= 180:
            raise ValueError(f"max_deg must be in [0, 180], got {max_deg}")
        F.border_mode(border)  # a bad name fails when the recipe is built
        self.max_deg, self.fill, self.border = max_deg, fill, border

    def __call__(self, image, rng=None):
        angle = _rng(rng).uniform(-self.max_deg, self.max_deg)
        return F.rotate(image, angle, self.fill, self.border)


@TRANSFORMS.register("shear")
class RandShear(Transform):
    """Shear along x by an angle drawn uniformly from [-max_deg, max_deg] (the paced-transfer
    paper's "random shear")."""

    random = True

    def __init__(self, max_deg: float = 10.0, fill: float = 0.0, border: str = "constant"):
        if not 0 <= max_deg < 90:
            raise ValueError(f"max_deg must be in [0, 90), got {max_deg}")
        F.border_mode(border)  # a bad name fails when the recipe is built
        self.max_deg, self.fill, self.border = max_deg, fill, border

    def __call__(self, image, rng=None):
        return F.shear(image, _rng(rng).uniform(-self.max_deg, self.max_deg), self.fill, self.border)


@TRANSFORMS.register("blur")
class RandGaussianBlur(Transform):
    """Gaussian blur with sigma drawn uniformly from [sigma_min, sigma_max], with probability ``p``."""

    random = True

    def __init__(self, sigma_min: float = 0.2, sigma_max: float = 1.0, p: float = 1.0):
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        _check_prob(p)
        self.sigma_min, self.sigma_max, self.p = sigma_min, sigma_max, p

    def __call__(self, image, rng=None):
        rng = _rng(rng)
        if rng.random() >= self.p:
            return image
        return F.gaussian_blur(image, rng.uniform(self.sigma_min, self.sigma_max))


@TRANSFORMS.register("zoom")
class RandZoom(Transform):
    """Zoom about the centre by a factor drawn uniformly from [min_factor, max_factor]."""

    random = True

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1, fill: float = 0.0,
                 border: str = "constant"):
        if not 0 < min_factor <= max_factor:
            raise ValueError(f"need 0 < min_factor <= max_factor, got {min_factor}, {max_factor}")
        F.border_mode(border)  # a bad name fails when the recipe is built
        self.min_factor, self.max_factor, self.fill, self.border = min_factor, max_factor, fill, border

    def __call__(self, image, rng=None):
        return F.zoom(image, _rng(rng).uniform(self.min_factor, self.max_factor), self.fill, self.border)


@TRANSFORMS.register("resample")
class Resample(Transform):
    """Resize with one named method (nearest, area, linear, cubic, lanczos), aliasing and all."""

    def __init__(self, size: int | Sequence[int], method: str = "area"):
        F._as_size(size)
        _check_methods([method], "method")
        self.size, self.method = size, method

    def __call__(self, image, rng=None):
        return F.resample(image, self.size, self.method)


@TRANSFORMS.register("lowpass_resize")
class LowpassResize(Transform):
    """The canonical preparation: anti-aliased resize to ``size``, then a Gaussian blur ``sigma``
    (output pixels). Used after augmentation at training and identically at inference."""

    def __init__(self, size: int | Sequence[int], sigma: float = 1.0):
        F._as_size(size)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.size, self.sigma = size, sigma

    def __call__(self, image, rng=None):
        return F.lowpass_resize(image, self.size, self.sigma)


@TRANSFORMS.register("unframe")
class Unframe(Transform):
    """Replace a uniform frame (collimator edge, padding, exported border) that differs from
    the film beside it by the film's edge continued outward (:func:`~boneage.transforms.functional.unframe`)."""

    def __init__(self, tol: float = 1.0 / 255, max_fraction: float = 0.25, min_contrast: float = 0.1):
        F.check_unframe_params(tol, max_fraction, min_contrast)
        self.tol, self.max_fraction, self.min_contrast = tol, max_fraction, min_contrast

    def __call__(self, image, rng=None):
        return F.unframe(image, self.tol, self.max_fraction, self.min_contrast)


class _RandomStep(Transform):
    """An augmentation applied with probability ``p``; subclasses draw parameters in ``_apply``."""

    random = True

    def __init__(self, p: float):
        _check_prob(p)
        self.p = p

    def __call__(self, image, rng=None):
        rng = _rng(rng)
        if rng.random() >= self.p:
            return image
        return self._apply(image, rng)

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@TRANSFORMS.register("stretch")
class PercentileStretch(Transform):
    """Intensity standardisation: the ``low``/``high`` percentiles become 0 and 1, taken
    inside a frame of ``margin`` (fraction of each side) left out."""

    def __init__(self, low: float = 1.0, high: float = 99.0, margin: float = 0.0):
        F.check_percentile_range(low, high)
        F.check_stretch_margin(margin)
        self.low, self.high, self.margin = low, high, margin

    def __call__(self, image, rng=None):
        return F.stretch_percentiles(image, self.low, self.high, self.margin)


@TRANSFORMS.register("rescale")
class RandRescale(_RandomStep):
    """Imitate how the image was resampled before it reached us: resample to a random
    ``factor`` in [factor_min, factor_max] of its size with one of ``first`` and back with one
    of ``second`` (e.g. nearest-neighbour copies of larger originals, enlarged small images)."""

    def __init__(self, factor_min: float = 0.6, factor_max: float = 4.0,
                 first: Sequence[str] = ("linear", "cubic", "area", "nearest"),
                 second: Sequence[str] = ("nearest", "area", "linear", "cubic"), p: float = 0.5):
        super().__init__(p)
        if not 0.1 <= factor_min <= factor_max <= 16:
            raise ValueError(f"need 0.1 <= factor_min <= factor_max <= 16, got {factor_min}, {factor_max}")
        self.first, self.second = list(_check_methods(first, "first")), list(_check_methods(second, "second"))
        self.factor_min, self.factor_max = factor_min, factor_max

    def _apply(self, image, rng):
        # Log-uniform: shrinking from 2x and from 4x are equally likely.
        factor = float(np.exp(rng.uniform(np.log(self.factor_min), np.log(self.factor_max))))
        return F.rescale_roundtrip(image, factor, self.first[rng.integers(len(self.first))],
                                   self.second[rng.integers(len(self.second))])


@TRANSFORMS.register("sharpen")
class RandSharpen(_RandomStep):
    """Unsharp masking with an amount drawn from [amount_min, amount_max] (edge enhancement
    that many X-ray consoles apply)."""

    def __init__(self, amount_min: float = 0.3, amount_max: float = 1.5, sigma: float = 1.0, p: float = 0.5):
        super().__init__(p)
        if not 0 <= amount_min <= amount_max:
            raise ValueError(f"need 0 <= amount_min <= amount_max, got {amount_min}, {amount_max}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.amount_min, self.amount_max, self.sigma = amount_min, amount_max, sigma

    def _apply(self, image, rng):
        return F.sharpen(image, rng.uniform(self.amount_min, self.amount_max), self.sigma)


@TRANSFORMS.register("noise")
class RandNoise(_RandomStep):
    """Gaussian noise with a standard deviation drawn from [std_min, std_max] (``relative``: as
    a fraction of the image's 1st-99th percentile range)."""

    def __init__(self, std_min: float = 0.005, std_max: float = 0.03, relative: bool = False, p: float = 0.5):
        super().__init__(p)
        if not 0 <= std_min <= std_max <= 1:
            raise ValueError(f"need 0 <= std_min <= std_max <= 1, got {std_min}, {std_max}")
        self.std_min, self.std_max, self.relative = std_min, std_max, bool(relative)

    def _apply(self, image, rng):
        return F.add_noise(image, rng.uniform(self.std_min, self.std_max), rng, self.relative)


@TRANSFORMS.register("jpeg")
class RandJPEG(_RandomStep):
    """JPEG round trip at a quality drawn from [quality_min, quality_max] (1-100)."""

    def __init__(self, quality_min: int = 30, quality_max: int = 95, p: float = 0.5):
        super().__init__(p)
        for name, q in (("quality_min", quality_min), ("quality_max", quality_max)):
            if not (isinstance(q, int) and 1 <= q <= 100):
                raise ValueError(f"JPEG {name} must be an integer in 1-100, got {q!r}")
        if quality_min > quality_max:
            raise ValueError(f"need quality_min <= quality_max, got {quality_min}, {quality_max}")
        self.quality_min, self.quality_max = quality_min, quality_max

    def _apply(self, image, rng):
        return F.jpeg_compress(image, int(rng.integers(self.quality_min, self.quality_max + 1)))


@TRANSFORMS.register("quantize")
class RandQuantize(_RandomStep):
    """Quantise to one of ``bits`` (e.g. 6, 8, 12, 16): sources of different bit depth."""

    def __init__(self, bits: Sequence[int] = (6, 8, 12, 16), p: float = 0.3):
        super().__init__(p)
        bits = list(bits)
        if not bits or any(not (isinstance(b, int) and 1 <= b <= 16) for b in bits):
            raise ValueError(f"bits must be a non-empty list of integers in 1-16, got {bits!r}")
        self.bits = bits

    def _apply(self, image, rng):
        return F.quantize(image, self.bits[rng.integers(len(self.bits))])


@TRANSFORMS.register("gamma")
class RandGamma(_RandomStep):
    """Gamma drawn log-uniformly from [gamma_min, gamma_max] (both > 0)."""

    def __init__(self, gamma_min: float = 0.7, gamma_max: float = 1.4, p: float = 0.5):
        super().__init__(p)
        if not 0 < gamma_min <= gamma_max:
            raise ValueError(f"need 0 < gamma_min <= gamma_max, got {gamma_min}, {gamma_max}")
        self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def _apply(self, image, rng):
        return F.adjust_gamma(image, float(np.exp(rng.uniform(np.log(self.gamma_min), np.log(self.gamma_max)))))


@TRANSFORMS.register("window")
class RandWindow(_RandomStep):
    """A random display window: ``low`` from [-shift, shift], ``high`` from [1 - shift, 1 + shift].

    Windows wider than [0, 1] flatten the contrast (a 12- or 16-bit source shown through its
    full range), narrower ones stretch it.
    """

    def __init__(self, shift: float = 0.15, p: float = 0.5):
        super().__init__(p)
        if not 0 <= shift < 0.5:
            raise ValueError(f"window shift must be in [0, 0.5), got {shift}")
        self.shift = shift

    def _apply(self, image, rng):
        low = rng.uniform(-self.shift, self.shift)
        high = rng.uniform(1 - self.shift, 1 + self.shift)
        return F.window(image, low, high)


@TRANSFORMS.register("border")
class RandBorder(_RandomStep):
    """A frame of width in [width_min, width_max] (fraction) in black or white."""

    def __init__(self, width_min: float = 0.01, width_max: float = 0.06,
                 values: Sequence[float] = (0.0, 1.0), p: float = 0.2):
        super().__init__(p)
        if not 0 <= width_min <= width_max < 0.5:
            raise ValueError(f"need 0 <= width_min <= width_max < 0.5, got {width_min}, {width_max}")
        self.width_min, self.width_max, self.values = width_min, width_max, _check_values(values)

    def _apply(self, image, rng):
        return F.add_border(image, rng.uniform(self.width_min, self.width_max),
                            self.values[rng.integers(len(self.values))])


@TRANSFORMS.register("pad")
class RandPad(_RandomStep):
    """Pad random sides by up to ``max_fraction`` with black or white, then squash back to the
    input's size: a source padded (e.g. to a square) before it was shrunk."""

    def __init__(self, max_fraction: float = 0.25, values: Sequence[float] = (0.0, 1.0), p: float = 0.2):
        super().__init__(p)
        if not 0 <= max_fraction <= 2:
            raise ValueError(f"max_fraction must be in [0, 2], got {max_fraction}")
        self.max_fraction, self.values = max_fraction, _check_values(values)

    def _apply(self, image, rng):
        sides = rng.uniform(0, self.max_fraction, size=4) * (rng.random(4) < 0.5)
        value = self.values[rng.integers(len(self.values))]
        return F.resize(F.pad(image, *sides, value=value), image.shape)


@TRANSFORMS.register("marker")
class RandMarker(_RandomStep):
    """Burn one of ``texts`` into a random corner at a height in [size_min, size_max] and an
    intensity in [value_min, value_max]."""

    def __init__(self, texts: Sequence[str] = ("L", "R", "LT", "RT", "PA"), size_min: float = 0.04,
                 size_max: float = 0.12, value_min: float = 0.7, value_max: float = 1.0, p: float = 0.3):
        super().__init__(p)
        texts = list(texts)
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise ValueError(f"texts must be a non-empty list of non-empty strings, got {texts!r}")
        if not 0 < size_min <= size_max <= 0.5:
            raise ValueError(f"need 0 < size_min <= size_max <= 0.5, got {size_min}, {size_max}")
        if not 0 <= value_min <= value_max <= 1:
            raise ValueError(f"need 0 <= value_min <= value_max <= 1, got {value_min}, {value_max}")
        self.texts, self.size_min, self.size_max = texts, size_min, size_max
        self.value_min, self.value_max = value_min, value_max

    def _apply(self, image, rng):
        return F.burn_marker(image, self.texts[rng.integers(len(self.texts))],
                             F.MARKER_CORNERS[rng.integers(len(F.MARKER_CORNERS))],
                             rng.uniform(self.size_min, self.size_max),
                             rng.uniform(self.value_min, self.value_max))


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


def _check_methods(methods: Sequence[str], what: str) -> Sequence[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in F.RESAMPLE_METHODS]
    if not methods or bad:
        raise ValueError(f"{what} must name resampling methods from {sorted(F.RESAMPLE_METHODS)}, "
                         f"got {bad or methods!r}")
    return methods


def _check_values(values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"values must be a non-empty list of intensities in [0, 1], got {values!r}")
    return values


def build_transform(spec: dict[str, Any] | str) -> Transform:
    """Build one transform from a recipe step ``{"name": ..., **params}`` (or just a name)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"a transform step must be a mapping with a 'name', got {spec!r}")
    params = dict(spec)
    return TRANSFORMS.create(params.pop("name"), **params)


def build_pipeline(steps: Sequence[dict[str, Any] | str], mode: str = "sequential") -> Transform:
    """A ``Compose`` of steps (``mode="sequential"``) or a ``OneOf`` pool (``mode="one_of"``)."""
    transforms = [build_transform(s) for s in steps]
    if mode == "sequential":
        return Compose(transforms)
    if mode == "one_of":
        return OneOf(transforms) if transforms else Compose([])
    raise ConfigError(f"augmentation mode must be 'sequential' or 'one_of', got {mode!r}")


def canonical_pipeline(recipe) -> Transform | None:
    """The recipe's canonical preparation (after augmentation, before the network), or None."""
    if not recipe.canonical:
        return None
    pipeline = build_pipeline(recipe.canonical)
    if pipeline.random:
        raise ConfigError("canonical steps must be deterministic (they run at inference too); "
                          f"got {[t for t in pipeline.transforms if t.random]}")
    return pipeline


def preprocessed_copies(image: np.ndarray, pipeline: Transform,
                        variants: Sequence[Transform] = ()) -> list[np.ndarray]:
    """``image`` through ``pipeline`` and through each of ``variants`` (a recipe's
    ``inference.preprocess_views``), keeping only distinct copies, ``pipeline``'s first.

    A variant that changes nothing for this image (nearest-neighbour resampling of an image
    already on the target grid) adds no views, so its estimate is not counted twice.
    """
    image = np.asarray(image, dtype=np.float32)
    steps = pipeline.transforms if isinstance(pipeline, Compose) else [pipeline]
    stages = [image]  # the image after each step of the recipe's own pipeline
    for step in steps:
        stages.append(step(stages[-1]))
    copies = [stages[-1]]
    for variant in variants:
        # Leading steps the variant shares with the pipeline (the bundled model's unframe of a
        # full-resolution radiograph) are not run twice.
        variant_steps = variant.transforms if isinstance(variant, Compose) else [variant]
        shared = _shared_prefix(steps, variant_steps)
        copy = stages[shared]
        for step in variant_steps[shared:]:
            copy = step(copy)
        if not any(c.shape == copy.shape and np.array_equal(c, copy) for c in copies):
            copies.append(copy)
    return copies


def _shared_prefix(a: Sequence[Transform], b: Sequence[Transform]) -> int:
    """How many leading steps two pipelines share: deterministic, same class, same parameters."""
    n = 0
    for x, y in zip(a, b):
        if type(x) is not type(y) or getattr(x, "random", False) or repr(x) != repr(y):
            break
        n += 1
    return n


def network_input(images: np.ndarray, recipe) -> np.ndarray:
    """Network input (..., C, H, W) float32 from [0, 1] image(s) (..., H, W): clipped,
    normalised by the recipe's input spec, the channel replicated to the model's count.

    The one definition of what a network is fed: training, batch evaluation, the PyTorch
    Predictor (as a tensor) and the ONNX runner (as this array) all call it.
    """
    channels, mean, std = recipe.input_spec()
    x = (np.clip(images, 0.0, 1.0) - np.float32(mean)) / np.float32(std)
    x = np.ascontiguousarray(x, dtype=np.float32)[..., None, :, :]
    if channels > 1:
        x = np.ascontiguousarray(np.broadcast_to(x, (*x.shape[:-3], channels, *x.shape[-2:])))
    return x


@TRANSFORMS.register("convex_hull_crop")
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
        return convex_hull_crop(image, threshold=self.threshold, margin=self.margin)


@dataclass(frozen=True)
class NetworkRunner:
    """How one kind of network-backed step gets its network and runs it: ``load(path)`` reads
    the network's file, ``run(network, image, **options)`` gives the transformed image."""

    load: Callable[[str], Any]
    run: Callable[..., np.ndarray]


#: Runners of the network-backed steps, by the step class's ``subnetwork`` kind. The layer
#: that owns the networks, PyTorch's (:mod:`boneage.inference.torch_model`), registers them:
#: this package never imports a network, so preprocessing stays on the light path.
NETWORK_RUNNERS: Registry = Registry("network-backed step")


class _NetworkStep(Transform):
    """A step that runs a trained network of its own (hand crops, masks, enhancement).

    ``weights`` is the network's file, which must exist when the step is built (a recipe
    naming a missing file fails before any training starts), or the ``"sha256:..."``
    reference of one embedded in a loaded model file. A file is loaded on first use, once, so
    building a pipeline stays cheap and worker processes each load their own copy.
    Subclasses name the ``subnetwork`` kind (its :data:`NETWORK_RUNNERS` entry, and what model
    files embed) and what the file is (``file_kind``, for messages).
    """

    subnetwork: str
    file_kind: str

    def __init__(self, weights: str):
        self.weights = str(weights)
        self._model = None
        if embedded.is_reference(weights):
            self._model = embedded.resolve(weights)
        elif not Path(weights).is_file():
            raise ConfigError(f"{self.file_kind} not found: {weights}")

    @property
    def runner(self) -> NetworkRunner:
        if self.subnetwork not in NETWORK_RUNNERS:
            raise ConfigError(f"the {self.file_kind} needs PyTorch to run: import "
                              f"boneage.inference.torch_model (the 'train' extra) before using it")
        return NETWORK_RUNNERS.get(self.subnetwork)

    def network(self):
        """The network itself (loaded from its file on first use)."""
        if self._model is None:
            try:
                self._model = self.runner.load(self.weights)
            except BoneAgeError as exc:
                raise ConfigError(f"cannot load the {self.file_kind} {self.weights}: {exc}") from exc
        return self._model

    def _run(self, image, **options):
        return self.runner.run(self.network(), image, **options)


@TRANSFORMS.register("unet_crop")
class UNetCrop(_NetworkStep):
    """Crop to the hand mask of a trained hand U-Net (U+S+I); ``weights`` as
    :class:`_NetworkStep`'s."""

    subnetwork, file_kind = "hand_unet", "U-Net weights file"

    def __init__(self, weights: str, margin: float = 0.02):
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = margin
        super().__init__(weights)

    def __call__(self, image, rng=None):
        return self._run(image, margin=self.margin)


@TRANSFORMS.register("hand_mask")
class HandMask(_NetworkStep):
    """Crop to the hand found by a trained segmentation network, optionally zeroing the
    background (masked inputs, issue 11).

    ``weights`` is a segmentation model file (``boneage train`` of a ``task: segmentation``
    recipe) or an embedded reference, as :class:`_NetworkStep`'s. ``margin`` grows the hand's
    box by that fraction of its height/width per side; ``zero_background`` sets every pixel
    outside the mask to 0.
    """

    subnetwork, file_kind = "segmenter", "segmentation model file"

    def __init__(self, weights: str, margin: float = 0.05, zero_background: bool = False):
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not isinstance(zero_background, bool):
            raise ValueError(f"zero_background must be true or false, got {zero_background!r}")
        self.margin, self.zero_background = float(margin), zero_background
        super().__init__(weights)

    def __call__(self, image, rng=None):
        return self._run(image, margin=self.margin, zero_background=self.zero_background)


@TRANSFORMS.register("gan_enhance")
class GanEnhance(_NetworkStep):
    """Enhance the image with a trained pix2pix generator (issue 12, :mod:`boneage.enhancement`);
    ``weights`` is a generator file written by a ``task: gan`` run or an embedded reference,
    as :class:`_NetworkStep`'s."""

    subnetwork, file_kind = "enhancer", "enhancement generator file"

    def __call__(self, image, rng=None):
        return self._run(image)
