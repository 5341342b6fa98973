"""Images that are not hand radiographs, generated, for fitting and testing the quality gate.

Each *kind* draws a float32 grayscale image in [0, 1] from a seeded generator: gradients,
constant and near-constant images, noise, text, line plots, geometric shapes, photographs
(crops of the two photographs scikit-learn ships) and slices of other modalities and body
parts (the CT and MR images pydicom ships as test data). Kinds are split into *variants* so
the gate can be fitted on some (e.g. the china photograph, the CT slices) and measured on
others it never saw (the flower photograph, the MR slices); :data:`FIT_VARIANTS` and
:data:`TEST_VARIANTS` name them. Nothing is downloaded: missing files shrink the set.

Real radiographs of other body parts come from a folder the user gives
(:func:`read_body_part_folder`: ``labels.csv`` with ``id,body_part`` and ``images/``), split
by :func:`split_body_parts` into a part the gate is fitted on and a part it is only measured on.
"""

from __future__ import annotations

import csv
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from boneage.data.body_parts import BODY_PARTS
from boneage.data.labels import index_images
from boneage.errors import InputError
from boneage.io.dicom import dataset_to_image
from boneage.registry import Registry

#: ``fn(rng, height, width) -> float32 (H, W) in [0, 1]``, by variant name ``kind/variant``.
NEGATIVES: Registry = Registry("negative image kind")


def _register(name: str):
    def deco(fn: Callable) -> Callable:
        NEGATIVES.add(name, fn)
        return fn
    return deco


def _unit(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    return np.zeros_like(image) if hi <= lo else (image - lo) / (hi - lo)


@_register("gradient/linear")
def _linear_gradient(rng, h, w):
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    return _unit(g) ** rng.uniform(0.5, 2.0)


@_register("gradient/radial")
def _radial_gradient(rng, h, w):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.hypot(yy - cy, xx - cx)
    g = _unit(g)
    return 1.0 - g if rng.random() < 0.5 else g


@_register("constant/flat")
def _flat(rng, h, w):
    return np.full((h, w), rng.choice([0.0, 1.0, rng.uniform(0, 1)]), np.float32)


@_register("constant/nearly")
def _nearly_flat(rng, h, w):
    base = rng.uniform(0, 1)
    return np.clip(base + rng.normal(0, 0.01, (h, w)), 0, 1).astype(np.float32)


@_register("noise/uniform")
def _uniform_noise(rng, h, w):
    return rng.random((h, w), dtype=np.float32)


@_register("noise/gaussian")
def _gaussian_noise(rng, h, w):
    return np.clip(rng.normal(0.5, rng.uniform(0.05, 0.3), (h, w)), 0, 1).astype(np.float32)


@_register("noise/smooth")
def _smooth_noise(rng, h, w):
    sigma = rng.uniform(2, 0.1 * max(h, w))
    return _unit(cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), sigma))


def _words(rng, n: int) -> str:
    letters = string.ascii_letters + string.digits
    return " ".join("".join(rng.choice(list(letters), rng.integers(2, 9))) for _ in range(n))


@_register("text/page")
def _text_page(rng, h, w):
    ink, paper = (0, 255) if rng.random() < 0.7 else (255, 0)
    image = np.full((h, w), paper, np.uint8)  # OpenCV draws text on 8-bit images only
    scale = rng.uniform(0.4, 1.6) * max(h, w) / 512
    step = int(30 * scale) + 4
    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX,
                           cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
    for y in range(step, h, step):
        cv2.putText(image, _words(rng, 8), (int(rng.integers(0, max(1, w // 8))), y), font,
                    scale, ink, max(1, int(round(scale * 2))), cv2.LINE_AA)
    return image.astype(np.float32) / 255.0


@_register("text/label")
def _text_label(rng, h, w):
    image = ((_smooth_noise(rng, h, w) * 0.3 + rng.uniform(0, 0.5)) * 255).astype(np.uint8)
    scale = rng.uniform(2, 5) * max(h, w) / 512
    for _ in range(rng.integers(1, 4)):
        org = (int(rng.integers(0, w // 2)), int(rng.integers(h // 5, h)))
        cv2.putText(image, _words(rng, 2), org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                    max(2, int(scale * 3)), cv2.LINE_AA)
    return image.astype(np.float32) / 255.0


@_register("plot/lines")
def _line_plot(rng, h, w):
    dark = rng.random() < 0.3
    image = np.full((h, w), 0.0 if dark else 1.0, np.float32)
    ink = 1.0 if dark else 0.0
    x0, y0, x1, y1 = int(0.12 * w), int(0.88 * h), int(0.95 * w), int(0.06 * h)
    thick = max(1, max(h, w) // 300)
    cv2.line(image, (x0, y0), (x1, y0), ink, thick)
    cv2.line(image, (x0, y0), (x0, y1), ink, thick)
    for t in np.linspace(0, 1, int(rng.integers(4, 11))):
        x = int(x0 + t * (x1 - x0))
        y = int(y0 + t * (y1 - y0))
        cv2.line(image, (x, y0), (x, y0 + 3 * thick), ink, thick)
        cv2.line(image, (x0 - 3 * thick, y), (x0, y), ink, thick)
        if rng.random() < 0.5:  # grid lines
            cv2.line(image, (x, y0), (x, y1), 0.5, 1)
    xs = np.linspace(x0, x1, 200)
    for _ in range(rng.integers(1, 4)):
        f, p, a = rng.uniform(0.5, 6), rng.uniform(0, 6), rng.uniform(0.1, 0.45)
        trend = rng.uniform(-0.3, 0.3)
        ys = y0 + (y1 - y0) * (0.5 + a * np.sin(f * np.linspace(0, 6, 200) + p)
                               + trend * np.linspace(-1, 1, 200))
        pts = np.stack([xs, np.clip(ys, y1, y0)], 1).astype(np.int32)
        cv2.polylines(image, [pts], False, float(rng.uniform(0, 0.6) if not dark else rng.uniform(0.5, 1)),
                      thick + 1, cv2.LINE_AA)
    return image


@_register("plot/bars")
def _bar_plot(rng, h, w):
    image = np.ones((h, w), np.float32)
    n = int(rng.integers(3, 12))
    width = 0.8 * w / n
    for i in range(n):
        top = int(h * (0.9 - rng.uniform(0.1, 0.8)))
        x = int(0.1 * w + i * width)
        cv2.rectangle(image, (x, top), (int(x + 0.7 * width), int(0.9 * h)), float(rng.uniform(0, 0.7)), -1)
    cv2.line(image, (int(0.08 * w), int(0.9 * h)), (int(0.95 * w), int(0.9 * h)), 0.0, 2)
    return image


@_register("shapes/random")
def _shapes(rng, h, w):
    image = np.full((h, w), rng.uniform(0, 1), np.float32)
    for _ in range(rng.integers(3, 15)):
        value = float(rng.uniform(0, 1))
        if rng.random() < 0.5:
            cv2.circle(image, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                       int(rng.integers(3, max(h, w) // 3)), value, -1)
        else:
            p = rng.integers(0, [w, h, w, h])
            cv2.rectangle(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), value, -1)
    return image


@_register("shapes/checkerboard")
def _checkerboard(rng, h, w):
    cell = int(rng.integers(4, max(5, min(h, w) // 3)))
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy // cell) + (xx // cell)) % 2).astype(np.float32)


@lru_cache(maxsize=None)
def _photograph(name: str) -> np.ndarray | None:
    try:
        from sklearn.datasets import load_sample_image

        rgb = load_sample_image(name)
    except Exception:  # scikit-learn without its sample images
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _crop(rng, image: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = image.shape
    side = rng.uniform(0.4, 1.0)
    ch, cw = max(8, int(H * side)), max(8, int(W * side))
    y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
    out = cv2.resize(image[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out if rng.random() < 0.5 else out[:, ::-1])


def _photo_kind(name: str):
    def draw(rng, h, w):
        photo = _photograph(name)
        if photo is None:
            return _smooth_noise(rng, h, w)
        return _crop(rng, photo, h, w)
    return draw


NEGATIVES.add("photograph/china", _photo_kind("china.jpg"))
NEGATIVES.add("photograph/flower", _photo_kind("flower.jpg"))

#: pydicom test files of other modalities and body parts, by variant.
_OTHER_MODALITY_FILES = {
    "ct": ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm"),
    "mr": ("MR_small.dcm", "examples_overlay.dcm"),
}


@lru_cache(maxsize=None)
def _other_modality_slices(variant: str) -> tuple[np.ndarray, ...]:
    try:
        from pydicom.data import get_testdata_file

        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a dependency
        return ()
    out = []
    for name in _OTHER_MODALITY_FILES[variant]:
        try:
            path = get_testdata_file(name, download=False)
            if path is None:
                continue
            out.append(dataset_to_image(pydicom.dcmread(path), name).pixels)
        except Exception:  # a codec this install lacks: use the others
            continue
    return tuple(out)


def _modality_kind(variant: str):
    def draw(rng, h, w):
        slices = _other_modality_slices(variant)
        if not slices:
            return _smooth_noise(rng, h, w)
        return _crop(rng, slices[int(rng.integers(0, len(slices)))], h, w)
    return draw


NEGATIVES.add("other_modality/ct", _modality_kind("ct"))
NEGATIVES.add("other_modality/mr", _modality_kind("mr"))

#: Variants the gate is fitted on, and those it is measured on (never fitted): every kind has
#: a held-out variant, so the measured rejection is of images unlike any the gate saw.
FIT_VARIANTS = ("gradient/linear", "constant/flat", "noise/uniform", "noise/smooth", "text/page",
                "plot/lines", "shapes/random", "photograph/china", "other_modality/ct")
TEST_VARIANTS = ("gradient/radial", "constant/nearly", "noise/gaussian", "text/label",
                 "plot/bars", "shapes/checkerboard", "photograph/flower", "other_modality/mr")


def negative_image(variant: str, seed: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """One generated non-radiograph of ``variant`` (see :data:`NEGATIVES`), reproducible from
    ``seed``; ``size`` (height, width) defaults to a random radiograph-like shape."""
    rng = np.random.default_rng([seed, sum(map(ord, variant))])
    if size is None:
        h = int(rng.integers(200, 1200))
        size = (h, int(h * rng.uniform(0.6, 1.4)))
    draw = NEGATIVES.get(variant)
    return np.clip(draw(rng, int(size[0]), int(size[1])), 0, 1).astype(np.float32)


def negative_set(variants, per_variant: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``per_variant`` images of each variant: ``[(variant, image), ...]``."""
    return [(v, negative_image(v, seed * 100_003 + i)) for v in variants for i in range(per_variant)]


# --- real radiographs of other body parts ----------------------------------------------------

@dataclass(frozen=True)
class BodyPartImage:
    """One real radiograph that is not a hand, and the body part its label names."""

    path: Path
    id: str
    body_part: str


def read_body_part_folder(folder) -> list[BodyPartImage]:
    """The images of a folder of real non-hand radiographs, in the order of its ``labels.csv``
    (columns ``id,body_part``; images ``images/<id>.<ext>``).

    Raises:
        InputError: no folder or no ``labels.csv``, a missing column, an empty id, a body
            part outside :data:`~boneage.data.body_parts.BODY_PARTS` (``hand`` included:
            hands are what the gate accepts), or ids without an image; one line naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("negatives folder not found", folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise InputError("no labels.csv in this negatives folder (it needs labels.csv with "
                         "id,body_part and images/<id>.png|.jpg)", folder)
    with open(labels, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "id" not in columns or "body_part" not in columns:
            raise InputError(f"needs the columns id,body_part; found {','.join(columns) or 'none'}", labels)
        reader.fieldnames = columns
        rows = [(line, (r.get("id") or "").strip(), (r.get("body_part") or "").strip().lower())
                for line, r in enumerate(reader, start=2)]
    images = index_images(folder / "images") if (folder / "images").is_dir() else {}
    out, missing = [], []
    for line, image_id, part in rows:
        if not image_id:
            raise InputError(f"line {line}: empty id", labels)
        if part not in BODY_PARTS:
            raise InputError(f"line {line}: body part {part!r} is not a known one "
                             f"({', '.join(sorted(BODY_PARTS))})", labels)
        path = images.get(image_id)
        if path is None:
            missing.append(image_id)
        else:
            out.append(BodyPartImage(path, image_id, part))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} id(s) have no image in {folder / 'images'}: {shown}", labels)
    if not out:
        raise InputError("no images listed", labels)
    return out


def split_body_parts(images: list[BodyPartImage], test_fraction: float, seed: int = 0,
                     where: str | Path | None = None) -> tuple[list[BodyPartImage], list[BodyPartImage]]:
    """``(fit, test)``: a seeded draw, stratified by body part, puts ``round(n *
    test_fraction)`` of each body part's ``n`` images in the test part (only measured) and the
    rest in the fit part; both keep the input order.

    Raises:
        InputError: a body part left with no test image or no image to fit on (``where``
            names the folder in the message).
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"the negatives' test fraction must be in (0, 1), got {test_fraction:g}")
    rng = np.random.default_rng(seed)
    parts = np.array([im.body_part for im in images])
    test = np.zeros(len(images), bool)
    for part in sorted({im.body_part for im in images}):
        idx = rng.permutation(np.flatnonzero(parts == part))
        n_test = int(round(len(idx) * test_fraction))
        if n_test == 0 or n_test == len(idx):
            lacking = "no test image" if n_test == 0 else "no image to fit on"
            raise InputError(f"the split leaves body part {part!r} {lacking} ({len(idx)} image(s), "
                             f"test fraction {test_fraction:g}); give it more images", where)
        test[idx[:n_test]] = True
    return ([im for im, t in zip(images, test) if not t], [im for im, t in zip(images, test) if t])
