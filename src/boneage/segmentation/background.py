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

from boneage.segmentation.hull import largest_component
from boneage.transforms.functional import _check_image

__all__ = ["mask_from_removed_background", "fill_holes"]


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
