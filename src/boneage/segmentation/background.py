"""Hand masks of radiographs whose background was removed (``rsna-fullres``): threshold + cleanup.

Those films have every background pixel exactly 0, so the hand is what is above a small
threshold. Cleanup makes it a mask a person would draw: a morphological closing bridges the
dark soft-tissue gaps between fingers' edges and bones, holes inside the hand are filled, and
only the largest connected component is kept (specks the removal left behind go). This is how
the real validation masks of the segmentation evidence are made (``boneage annotate
background-masks``); they are written under a run folder, never into the repository.
"""

from __future__ import annotations

import cv2
import numpy as np

from boneage.transforms.hull import largest_component
from boneage.transforms.functional import _check_image

__all__ = ["mask_from_removed_background", "fill_holes", "film_background"]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """A 0/1 mask with every background region not connected to the border filled in."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    padded = np.pad(m, 1)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return (m | holes).astype(np.uint8)


def mask_from_removed_background(image: np.ndarray, threshold: float = 1.0 / 255.0,
                                 close_fraction: float = 0.005) -> np.ndarray:
    """Hand mask (uint8 0/1) of a 2-D [0, 1] image whose background is 0.

    Args:
        threshold: pixels at or above it are hand (default: one 8-bit grey level).
        close_fraction: side of the closing's square kernel as a fraction of the image's longer
            side (0.005 is 10 px on a 2080-px film); 0 skips the closing.
    """
    image = _check_image(image)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0.0 <= close_fraction < 0.5:
        raise ValueError(f"close_fraction must be in [0, 0.5), got {close_fraction}")
    mask = (image >= np.float32(threshold) - 1e-6).astype(np.uint8)
    side = int(round(close_fraction * max(image.shape)))
    if side >= 2:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    return fill_holes(largest_component(mask))


def film_background(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    level: tuple[float, float] = (0.0, 0.6), panels: int = 2,
                    noise: tuple[float, float] = (0.0, 0.03),
                    contrast: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``image`` with every pixel outside ``mask`` replaced by a synthetic film background:
    a grey level drawn from ``level`` with a linear gradient across the film, up to
    ``panels`` collimation panels (bands along an edge, brighter or darker than the rest)
    and detector noise of a standard deviation drawn from ``noise``. The hand keeps its
    pixels, scaled by a factor drawn from ``contrast`` and lifted onto the background's grey
    (the default (1, 1) leaves it exactly as it was): a washed-out film's grey hand on grey.

    Films whose background was removed (all 0) teach a segmenter that "not black" means hand;
    raw films have grey backgrounds and collimation panels. Training on such composites is
    how the rsna-fullres masks can teach it otherwise.
    """
    image = _check_image(image)
    m = np.asarray(mask) > 0
    if m.shape != image.shape:
        raise ValueError(f"mask shape {m.shape} does not match image shape {image.shape}")
    for name, (lo, hi) in (("level", level), ("noise", noise), ("contrast", contrast)):
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"{name} must be a range within [0, 1], got {(lo, hi)}")
    if int(panels) < 0:
        raise ValueError(f"panels must be >= 0, got {panels}")
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
    grey = rng.uniform(*level)
    back = grey + rng.uniform(-0.1, 0.1) * ramp
    for _ in range(int(rng.integers(0, int(panels) + 1))):
        side, depth = int(rng.integers(4)), rng.uniform(0.05, 0.3)
        band = (yy < depth * h, yy >= (1 - depth) * h, xx < depth * w, xx >= (1 - depth) * w)[side]
        back = np.where(band, rng.uniform(0.1, 0.9), back)
    back = back + rng.normal(0.0, rng.uniform(*noise), size=image.shape)
    c = rng.uniform(*contrast)
    hand = image if c == 1.0 else np.clip(grey + c * image, 0.0, 1.0)
    return np.where(m, hand, np.clip(back, 0.0, 1.0)).astype(np.float32)
