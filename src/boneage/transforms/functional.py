"""Pure array functions on 2-D float images in [0, 1].

Every function takes and returns a ``float32`` array of shape (H, W) (patch functions return a
stack), never modifies its input, and raises ``ValueError`` naming the bad value. The classes in
:mod:`boneage.transforms.classes` hold parameters and call these.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import cv2
import numpy as np

RESIZE_MODES = ("squash", "pad")

#: OpenCV interpolation of each resampling method a scanner, PACS or script may have used.
#: ``nearest`` samples pixel centres as Pillow's ``Image.NEAREST`` does (how rsna-100px was
#: made), which plain ``INTER_NEAREST`` does not.
RESAMPLE_METHODS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST_EXACT,
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected a 2-D grayscale image, got shape {shape}")
    return image.astype(np.float32, copy=False)


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; both must be positive."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def crop_fractions(image: np.ndarray, top: float = 0.0, bottom: float = 0.0,
                   left: float = 0.0, right: float = 0.0) -> np.ndarray:
    """Remove the given fraction of the height/width from each side.

    ``crop_fractions(img, 0.05, 0.05, 0.1, 0.1)`` drops 5 % of rows at the top and bottom and
    10 % of columns on each side (the paper's presets are (0.05,)*4 and (0.1, 0.05, 0.1, 0.1)).
    """
    image = _check_image(image)
    for name, value in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"crop fraction {name} must be in [0, 1), got {value}")
    if top + bottom >= 1.0 or left + right >= 1.0:
        raise ValueError(
            f"crop (top={top}, bottom={bottom}, left={left}, right={right}) removes the whole "
            "image; top+bottom and left+right must each be < 1")
    h, w = image.shape
    r0, r1 = int(round(h * top)), h - int(round(h * bottom))
    c0, c1 = int(round(w * left)), w - int(round(w * right))
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"crop leaves no pixels of a {h}x{w} image")
    return image[r0:r1, c0:c1].copy()


def resize(image: np.ndarray, size: int | Sequence[int], mode: str = "squash",
           pad_value: float = 0.0) -> np.ndarray:
    """Resize to ``size`` (an int for a square, or (height, width)).

    ``mode="squash"`` stretches to the target (what RSNA-100px did); ``mode="pad"`` keeps the
    aspect ratio, fits the image inside and pads the rest with ``pad_value``, centred.
    """
    image = _check_image(image)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    th, tw = _as_size(size)
    h, w = image.shape
    if mode == "squash":
        return _cv_resize(image, th, tw)
    scale = min(th / h, tw / w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    out = np.full((th, tw), pad_value, dtype=np.float32)
    r0, c0 = (th - nh) // 2, (tw - nw) // 2
    out[r0:r0 + nh, c0:c0 + nw] = _cv_resize(image, nh, nw)
    return out


def _cv_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape == (h, w):
        return image.copy()
    # INTER_AREA avoids aliasing when shrinking large radiographs; linear when enlarging.
    shrinking = h * w < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp).astype(np.float32, copy=False)


def resample(image: np.ndarray, size: int | Sequence[int], method: str = "area") -> np.ndarray:
    """Resize to ``size`` with one named method of :data:`RESAMPLE_METHODS` (aspect squashed).

    Unlike :func:`resize`, which always picks the anti-aliased method, this reproduces how an
    image may have been prepared elsewhere, aliasing included. Cubic and Lanczos overshoot is
    clipped back to [0, 1].
    """
    image = _check_image(image)
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"resampling method must be one of {sorted(RESAMPLE_METHODS)}, got {method!r}")
    th, tw = _as_size(size)
    if image.shape == (th, tw):
        return image.copy()
    out = cv2.resize(image, (tw, th), interpolation=RESAMPLE_METHODS[method])
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def rescale_roundtrip(image: np.ndarray, factor: float, first: str = "linear",
                      second: str = "area") -> np.ndarray:
    """Resample to ``factor`` times the size with ``first``, then back with ``second``.

    ``factor > 1`` imitates an image shrunk to this size from a larger source
    (``second`` decides whether it aliases); ``factor < 1`` loses resolution, as an image
    enlarged from a smaller source does. The output has the input's shape.
    """
    image = _check_image(image)
    if not 0.1 <= factor <= 16:
        raise ValueError(f"rescale factor must be in [0.1, 16], got {factor}")
    h, w = image.shape
    mid = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    return resample(resample(image, mid, first), (h, w), second)


def lowpass_resize(image: np.ndarray, size: int | Sequence[int], sigma: float) -> np.ndarray:
    """The canonical preparation: anti-aliased resize to ``size``, then a Gaussian low-pass.

    ``sigma`` is in output pixels. Whatever way an image reached this size (aliased
    nearest-neighbour copies, area-averaged or Lanczos-shrunk originals), the blur removes the
    frequencies where those preparations differ, so the network cannot learn them as a cue.
    ``sigma=0`` is a plain :func:`resize`.
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    out = resize(image, size)
    return gaussian_blur(out, sigma) if sigma > 0 else out


def check_percentile_range(low: float, high: float) -> None:
    """ValueError unless ``0 <= low < high <= 100``."""
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100 (percentiles), got low={low}, high={high}")


def check_stretch_margin(margin: float) -> None:
    """ValueError unless ``0 <= margin < 0.5`` (a fraction of each side)."""
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"stretch margin must be a fraction in [0, 0.5), got {margin}")


def stretch_percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.0,
                        margin: float = 0.0) -> np.ndarray:
    """Map the ``low``-th and ``high``-th intensity percentiles to 0 and 1, clipping beyond.

    An intensity standardisation that does not depend on how the file was windowed: a
    radiograph stored with a narrow or wide window, at another bit depth or with a bright
    marker gets the same contrast. A (near) constant image comes back unchanged.

    ``margin`` (a fraction of each side, in [0, 0.5)) leaves a frame of the image out of the
    percentiles, though not out of the stretch: a collimator frame or a burned-in label at the
    edge then cannot change the contrast given to the hand in the middle.
    """
    image = _check_image(image)
    check_percentile_range(low, high)
    check_stretch_margin(margin)
    h, w = image.shape
    mh, mw = int(round(h * margin)), int(round(w * margin))
    lo, hi = np.percentile(image[mh:h - mh, mw:w - mw], [low, high])
    if hi - lo < 1e-6:
        return image.copy()
    return np.clip((image - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)


def sharpen(image: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask: ``image + amount * (image - blur(image, sigma))``, clipped to [0, 1]."""
    image = _check_image(image)
    if not amount >= 0:
        raise ValueError(f"sharpen amount must be >= 0, got {amount}")
    detail = image - gaussian_blur(image, sigma)
    return np.clip(image + np.float32(amount) * detail, 0.0, 1.0)


def add_noise(image: np.ndarray, std: float, rng: np.random.Generator, relative: bool = False) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``std``, clipped to [0, 1].

    ``std`` is in intensity units, or with ``relative=True`` a fraction of the image's own
    1st-99th percentile range (a dim, low-contrast file gets proportionally less noise).
    """
    image = _check_image(image)
    if not std >= 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    if relative:
        lo, hi = np.percentile(image, [1.0, 99.0])
        std = std * float(hi - lo)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return np.clip(image + noise, 0.0, 1.0)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through 8-bit JPEG at ``quality`` (1-100): block artefacts and ringing."""
    image = _check_image(image)
    if not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ValueError(f"JPEG quality must be an integer in 1-100, got {quality!r}")
    u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0


def quantize(image: np.ndarray, bits: int) -> np.ndarray:
    """Round intensities to ``2**bits`` levels (1-16 bits), as a source of that depth stores them."""
    image = _check_image(image)
    if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= 16):
        raise ValueError(f"bits must be an integer in 1-16, got {bits!r}")
    levels = np.float32(2 ** int(bits) - 1)
    return np.round(np.clip(image, 0.0, 1.0) * levels) / levels


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """``image ** gamma``: below 1 brightens the soft tissue, above 1 darkens it."""
    image = _check_image(image)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return np.power(np.clip(image, 0.0, 1.0), np.float32(gamma))


def window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1] and clip: a display window or contrast change.

    ``low < 0`` or ``high > 1`` lowers the contrast (the image no longer fills [0, 1], as a
    12-bit detector read through a wide window does); inside [0, 1] it raises it.
    """
    image = _check_image(image)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"window needs finite low < high, got low={low}, high={high}")
    return np.clip((image - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def add_border(image: np.ndarray, width: float, value: float = 0.0) -> np.ndarray:
    """Overwrite a frame of ``width`` (fraction of each side) with ``value``: collimator edges."""
    image = _check_image(image)
    if not 0 <= width < 0.5:
        raise ValueError(f"border width must be a fraction in [0, 0.5), got {width}")
    if not 0 <= value <= 1:
        raise ValueError(f"border value must be in [0, 1], got {value}")
    out = image.copy()
    h, w = out.shape
    bh, bw = int(round(h * width)), int(round(w * width))
    if bh:
        out[:bh], out[h - bh:] = value, value
    if bw:
        out[:, :bw], out[:, w - bw:] = value, value
    return out


def check_unframe_params(tol: float, max_fraction: float, min_contrast: float) -> None:
    """ValueError naming the first of :func:`unframe`'s parameters out of range."""
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"unframe tol must be in [0, 1), got {tol}")
    if not 0.0 < max_fraction < 0.5:
        raise ValueError(f"unframe max_fraction must be a fraction in (0, 0.5), got {max_fraction}")
    if not 0.0 < min_contrast <= 1.0:
        raise ValueError(f"unframe min_contrast must be in (0, 1], got {min_contrast}")


def _frame_bands(image: np.ndarray, tol: float, max_fraction: float
                 ) -> tuple[list[int], list[float | None]]:
    """Widths and values of the one-valued bands at the four edges (see :func:`find_frame`)."""
    h, w = image.shape
    limit = (int(h * max_fraction), int(h * max_fraction), int(w * max_fraction), int(w * max_fraction))
    widths = [0, 0, 0, 0]
    values: list[float | None] = [None, None, None, None]

    def lines(side: int, n: int) -> np.ndarray:
        """The next ``n`` lines of ``side``, outermost first, one line per row of the result."""
        t, b, lft, r = widths
        if side == 0:
            return image[t:t + n, lft:w - r]
        if side == 1:
            return image[h - b - n:h - b, lft:w - r][::-1]
        if side == 2:
            return image[t:h - b, lft:lft + n].T
        return image[t:h - b, w - r - n:w - r][:, ::-1].T

    grown = True
    while grown:  # sides take turns, so a frame of different values on two sides is found whole
        grown = False
        for side in range(4):
            # Growing in chunks keeps a 2,000-px radiograph to a few vectorised passes.
            chunk = 8
            while widths[side] < limit[side]:
                block = lines(side, min(chunk, limit[side] - widths[side]))
                if block.size == 0:
                    break
                lo, hi = block.min(axis=1), block.max(axis=1)
                value = values[side] if values[side] is not None else 0.5 * float(lo[0] + hi[0])
                ok = (hi - lo <= tol) & (lo >= value - tol) & (hi <= value + tol)
                run = int(np.argmin(ok)) if not ok.all() else len(ok)
                if run:
                    values[side] = value
                    widths[side] += run
                    grown = True
                if run < len(ok):
                    break
                chunk *= 2
    return widths, values


def find_frame(image: np.ndarray, tol: float = 1.0 / 255, max_fraction: float = 0.25
               ) -> tuple[int, int, int, int]:
    """Widths in pixels (top, bottom, left, right) of the bands of one value at the image's edges.

    A line (row or column, between the bands already found) belongs to a side's band while
    every pixel in it lies within ``tol`` of the value of that side's outermost line. The sides
    are peeled in turn, so a frame on all four sides is found whole, and no band grows past
    ``max_fraction`` of its side. A band is only a candidate: :func:`unframe` decides whether it
    differs from the film beside it.
    """
    image = _check_image(image)
    check_unframe_params(tol, max_fraction, 1.0)
    return tuple(_frame_bands(image, tol, max_fraction)[0])


def unframe(image: np.ndarray, tol: float = 1.0 / 255, max_fraction: float = 0.25,
            min_contrast: float = 0.1) -> np.ndarray:
    """Replace a uniform frame around a film by the film's own edge, continued outward.

    A collimator edge, a scanner's padding or an exported border is a band of one value at the
    image's edge (:func:`find_frame`). It carries no anatomy but it moves any statistic taken
    over the image, such as the canonical percentile stretch: a white frame around a film with
    a grey background read one RSNA hand 15 months older. A band counts as a frame where its
    value differs by at least ``min_contrast`` from the median of the line just inside it; such
    sides are filled by repeating that line, so the image keeps its size and geometry. A band
    of the same value as the film beside it (the black background of most radiographs) is left
    as it is, and an image without a frame comes back as it is (the same array: no copy of a
    full-resolution radiograph on the prediction path).
    """
    image = _check_image(image)
    check_unframe_params(tol, max_fraction, min_contrast)
    h, w = image.shape
    (t, b, lft, r), values = _frame_bands(image, tol, max_fraction)
    if h - t - b < 1 or w - lft - r < 1:
        return image  # one value everywhere: nothing inside a frame to continue
    inner = image[t:h - b, lft:w - r]
    edges = (inner[0], inner[-1], inner[:, 0], inner[:, -1])
    keep = [width if width and abs(value - float(np.median(edge))) >= min_contrast else 0
            for width, value, edge in zip((t, b, lft, r), values, edges)]
    if not any(keep):
        return image
    kt, kb, kl, kr = keep
    core = image[kt:h - kb, kl:w - kr]
    return cv2.copyMakeBorder(core, kt, kb, kl, kr, cv2.BORDER_REPLICATE)


def pad(image: np.ndarray, top: float = 0.0, bottom: float = 0.0, left: float = 0.0,
        right: float = 0.0, value: float = 0.0) -> np.ndarray:
    """Add margins (fractions of the height / width) filled with ``value``; the image grows."""
    image = _check_image(image)
    for name, v in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        if not 0 <= v <= 2:
            raise ValueError(f"padding {name} must be a fraction in [0, 2], got {v}")
    if not 0 <= value <= 1:
        raise ValueError(f"padding value must be in [0, 1], got {value}")
    h, w = image.shape
    t, b = int(round(h * top)), int(round(h * bottom))
    le, r = int(round(w * left)), int(round(w * right))
    return cv2.copyMakeBorder(image, t, b, le, r, cv2.BORDER_CONSTANT, value=float(value))


def pad_to_square(image: np.ndarray, value: float = 0.0) -> np.ndarray:
    """Pad the shorter side equally on both ends so the image becomes square."""
    image = _check_image(image)
    h, w = image.shape
    if h == w:
        return image.copy()
    extra = abs(h - w)
    a, b = extra // 2, extra - extra // 2
    t, bo, le, r = (a, b, 0, 0) if h < w else (0, 0, a, b)
    return cv2.copyMakeBorder(image, t, bo, le, r, cv2.BORDER_CONSTANT, value=float(value))


MARKER_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def burn_marker(image: np.ndarray, text: str = "L", corner: str = "top_left", size: float = 0.08,
                value: float = 1.0) -> np.ndarray:
    """Burn a laterality marker or label (``text``) into a corner, ``size`` × the image height.

    Real radiographs carry such letters, often brighter than bone; a model must not read age
    from them.
    """
    image = _check_image(image)
    if corner not in MARKER_CORNERS:
        raise ValueError(f"marker corner must be one of {MARKER_CORNERS}, got {corner!r}")
    if not 0 < size <= 0.5:
        raise ValueError(f"marker size must be in (0, 0.5], got {size}")
    if not 0 <= value <= 1:
        raise ValueError(f"marker value must be in [0, 1], got {value}")
    if not text:
        raise ValueError("marker text must not be empty")
    out = image
    h, w = out.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = max(size * h / th, 0.1)
    thickness = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    margin = max(1, int(round(0.03 * min(h, w))))
    x = margin if corner.endswith("left") else max(0, w - tw - margin)
    y = th + margin if corner.startswith("top") else max(th, h - base - margin)
    # OpenCV draws text on 8-bit images only: draw an anti-aliased mask, then blend.
    mask = np.zeros((h, w), np.uint8)
    cv2.putText(mask, text, (int(x), int(y)), font, scale, 255, thickness, cv2.LINE_AA)
    alpha = mask.astype(np.float32) / 255.0
    return out * (1.0 - alpha) + np.float32(value) * alpha


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalization (OpenCV), on a 16-bit copy.

    Working at 16 bits keeps the precision of 16-bit DICOM input that an 8-bit CLAHE would lose.
    """
    image = _check_image(image)
    if not clip_limit > 0:
        raise ValueError(f"clip_limit must be > 0, got {clip_limit}")
    if int(tile_grid) < 1:
        raise ValueError(f"tile_grid must be >= 1, got {tile_grid}")
    u16 = np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16)
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid)))
    return op.apply(u16).astype(np.float32) / 65535.0


def normalize_minmax(image: np.ndarray) -> np.ndarray:
    """Stretch to [0, 1]; a constant image becomes all zeros."""
    image = _check_image(image)
    lo, hi = float(image.min()), float(image.max())
    if hi - lo < 1e-12:
        return np.zeros_like(image)
    return (image - lo) / (hi - lo)


def standardize(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(image - mean) / std, e.g. ImageNet statistics for a pretrained backbone."""
    image = _check_image(image)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return (image - np.float32(mean)) / np.float32(std)


def hflip(image: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.ascontiguousarray(_check_image(image)[:, ::-1])


def vflip(image: np.ndarray) -> np.ndarray:
    """Mirror top-bottom."""
    return np.ascontiguousarray(_check_image(image)[::-1, :])


#: How geometric transforms fill what comes into view: a constant (``fill``), the nearest edge
#: pixel (Keras' default, as if the detector extended), or a mirror of the image.
BORDERS: dict[str, int] = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE,
                           "reflect": cv2.BORDER_REFLECT_101}


def border_mode(border: str) -> int:
    """The OpenCV border flag for a :data:`BORDERS` name; ValueError naming the valid ones."""
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}")
    return BORDERS[border]


def rotate(image: np.ndarray, angle_deg: float, fill: float = 0.0, border: str = "constant") -> np.ndarray:
    """Rotate about the centre by ``angle_deg`` (counter-clockwise), same size; the corners
    that come into view are ``fill`` (``border="constant"``) or continue the edges."""
    image = _check_image(image)
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2.0 - 0.5, h / 2.0 - 0.5), float(angle_deg), 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border_mode(border), borderValue=float(fill))


def shear(image: np.ndarray, angle_deg: float, fill: float = 0.0, border: str = "constant") -> np.ndarray:
    """Shear along x about the centre row by ``angle_deg`` (as Keras' ``shear_range``): the
    pixel at row y moves ``tan(angle) * (y - centre)`` to the right; same size."""
    image = _check_image(image)
    if not -90 < angle_deg < 90:
        raise ValueError(f"shear angle must be in (-90, 90) degrees, got {angle_deg}")
    h, w = image.shape
    t = float(np.tan(np.deg2rad(angle_deg)))
    m = np.array([[1.0, t, -t * (h / 2.0 - 0.5)], [0.0, 1.0, 0.0]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border_mode(border), borderValue=float(fill))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel sized by OpenCV)."""
    image = _check_image(image)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def zoom(image: np.ndarray, factor: float, fill: float = 0.0, border: str = "constant") -> np.ndarray:
    """Scale about the centre by ``factor`` keeping the size (>1 zooms in, <1 zooms out)."""
    image = _check_image(image)
    if not factor > 0:
        raise ValueError(f"zoom factor must be > 0, got {factor}")
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2.0 - 0.5, h / 2.0 - 0.5), 0.0, float(factor))
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border_mode(border), borderValue=float(fill))


def patch_grid(image_size: int | Sequence[int], n: int, patch_size: int | Sequence[int]
               ) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` overlapping patches on a regular grid covering the image.

    ``n`` must be a square (k×k patches). The stride along each axis is
    ``(side - patch) / (k - 1)``, rounded per patch, so the first patch touches the top-left
    corner and the last one the bottom-right: the grid covers every pixel.
    """
    ih, iw = _as_size(image_size)
    ph, pw = _as_size(patch_size)
    k = math.isqrt(int(n)) if n > 0 else 0
    if n < 1 or k * k != n:
        raise ValueError(f"number of patches must be a square number (1, 4, 9, 25, 49, ...), got {n}")
    if ph > ih or pw > iw:
        raise ValueError(
            f"patch size {ph}x{pw} is larger than the image {ih}x{iw}; it must be at most the image size")

    def starts(side: int, patch: int) -> list[int]:
        if k == 1:
            return [(side - patch) // 2]
        step = (side - patch) / (k - 1)
        return [int(round(i * step)) for i in range(k)]

    return [(r, c) for r in starts(ih, ph) for c in starts(iw, pw)]


def extract_patches(image: np.ndarray, n: int, patch_size: int | Sequence[int]) -> np.ndarray:
    """Stack of ``n`` grid patches, shape (n, ph, pw), in row-major grid order."""
    image = _check_image(image)
    ph, pw = _as_size(patch_size)
    corners = patch_grid(image.shape, n, (ph, pw))
    return np.stack([image[r:r + ph, c:c + pw] for r, c in corners]).astype(np.float32)


def make_views(image: np.ndarray, patches: tuple[int, int] | None = None,
               flip: bool = False, angles: Sequence[float] = (),
               finalize: Callable[[np.ndarray], np.ndarray] | None = None,
               border: str = "constant") -> np.ndarray:
    """The views a model sees of one preprocessed image at inference, shape (V, h, w).

    ``patches=(n, size)`` cuts the grid patches (else the whole image is one view);
    ``angles`` adds the views of the image rotated by each angle (rotation test-time
    augmentation, before patching; ``border`` fills their corners as :func:`rotate` does);
    ``finalize`` (the recipe's canonical preparation) is applied to every view, as training
    applies it after augmentation; ``flip=True`` appends the left-right mirror of every view.
    """
    image = _check_image(image)
    images = [image] + [rotate(image, a, border=border) for a in angles]
    views = [v for im in images for v in (extract_patches(im, *patches) if patches else im[None])]
    if finalize is not None:
        views = [finalize(v) for v in views]
    views = np.stack(views)
    if flip:
        views = np.concatenate([views, views[:, :, ::-1]], axis=0)
    return np.ascontiguousarray(views, dtype=np.float32)


def view_layout(shape: Sequence[int], patches: tuple[int, int] | None = None, flip: bool = False,
                angles: Sequence[float] = ()) -> list[dict]:
    """Where each view of :func:`make_views` comes from, in the same order.

    Each entry has ``angle`` (the image was rotated by it first, 0 for the original), ``box``
    ``(row, col, height, width)`` in that (rotated) image and ``flipped``. Explanations use it
    to put per-view maps back onto the image.
    """
    h, w = int(shape[0]), int(shape[1])
    boxes = ([(r, c, patches[1], patches[1]) for r, c in patch_grid((h, w), *patches)]
             if patches else [(0, 0, h, w)])
    base = [{"angle": float(a), "box": b, "flipped": False} for a in [0.0, *angles] for b in boxes]
    return base + ([{**v, "flipped": True} for v in base] if flip else [])
