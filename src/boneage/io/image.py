"""Reading hand radiographs from disk or memory into a normalised grayscale array.

Every reader returns a :class:`LoadedImage` whose pixels are float32, 2-D, in [0, 1], with the
radiograph convention that bone is bright (1.0). Raster formats (PNG, JPEG, TIFF, BMP, ...) are
decoded by OpenCV; DICOM is handled in :mod:`boneage.io.dicom`. Anything that cannot be used is
reported as :class:`~boneage.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from boneage.errors import InputError
from boneage.io.types import ImageMetadata, LoadedImage, check_size

# IMREAD_UNCHANGED would ignore the EXIF orientation tag, and phone photos of films (a common
# way radiographs reach us) are often stored sideways with only that tag to say so. ANYDEPTH
# keeps 16-bit and float data; ANYCOLOR keeps colour as colour, which we convert ourselves,
# and drops the alpha channel that we would discard anyway.
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR

#: Formats named by magic bytes or extension that an image decoder is meant to read.
_IMAGE_FORMATS = frozenset({"png", "jpeg", "tiff", "bmp", "jpeg2000", "webp", "dicom", "gif", "pgm",
                            "pbm", "ppm", "pnm", "pxm", "pfm", "hdr", "exr", "sr", "ras"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),  # raw J2K codestream
)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read a radiograph file (PNG, JPEG, TIFF, BMP, DICOM, ...) as normalised grayscale.

    The file is read as bytes first, so any path the OS accepts works (including non-ASCII
    ones, which ``cv2.imread`` mishandles on some platforms). See :func:`read_image_bytes`
    for how the pixels are normalised.

    Raises:
        InputError: the file is missing or unreadable, not a decodable image, a DICOM
            without pixel data or with several frames, or too small / too large.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image file", path) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path) from exc
    return read_image_bytes(data, name=os.fspath(path))


def read_image_bytes(data: bytes, name: str = "<upload>") -> LoadedImage:
    """Decode an in-memory image (e.g. an HTTP upload) like :func:`read_image`.

    ``name`` only appears in error messages. DICOM is recognised by the ``DICM`` marker at
    offset 128; other data go to OpenCV, and if OpenCV cannot decode them they are tried as
    a DICOM dataset without the file preamble before giving up.

    Normalisation to float32 in [0, 1]:

    * unsigned integer rasters are divided by the maximum of their type (255 or 65535) --
      a 16-bit PNG that only uses 12 bits therefore looks dark; contrast is left to the
      preprocessing transforms rather than guessed here;
    * float (or signed) rasters already within [0, 1] are kept; otherwise they are min--max
      scaled, or clipped if constant;
    * colour is converted to luminance and alpha is dropped;
    * DICOM: see :func:`boneage.io.dicom.dataset_to_image`.

    Raises:
        InputError: as for :func:`read_image`.
    """
    # boundary: pydicom takes most of a second to import, which reading a PNG (and the light
    # install's start-up) need not pay.
    from boneage.io import dicom


    data = bytes(data)
    if not data:
        raise InputError("cannot decode image: file is empty", name)
    if dicom.has_dicom_preamble(data):
        return dicom.decode_dicom_bytes(data, name)

    fmt = sniff_format(data, name)
    if data.startswith(_PNG_SIGNATURE):
        data = _checked_png(data, name)
    arr = _imdecode(data)
    if arr is None:
        ds = dicom.try_read_headerless_dicom(data)
        if ds is not None:
            return dicom.dataset_to_image(ds, name)
        if looks_like_text(data):
            # A CSV or report passed by mistake: naming it after its extension ("CSV data is
            # corrupt") would suggest a damaged image.
            raise InputError("not an image (looks like text)", name)
        if fmt not in _IMAGE_FORMATS:
            raise InputError(
                "cannot decode image: not a recognised image format "
                "(PNG, JPEG, TIFF, BMP or DICOM expected)",
                name,
            )
        raise InputError(f"cannot decode image: {fmt.upper()} data is corrupt or truncated", name)

    h, w = arr.shape[:2]
    check_size(h, w, name)
    metadata = ImageMetadata(
        format=fmt, bit_depth=arr.dtype.itemsize * 8, original_shape=(int(h), int(w)),
        colourfulness=colourfulness(arr),
    )
    return LoadedImage(pixels=_raster_to_unit_gray(arr), metadata=metadata)


def looks_like_text(data: bytes, sample: int = 4096) -> bool:
    """Whether ``data`` starts like text: (nearly all) UTF-8 without NUL or control characters
    besides tab, line breaks and form feed. No image format starts like that."""
    head = data[:sample]
    if not head or b"\0" in head:
        return False
    # A few undecodable bytes are allowed: a character cut at the sample's end, Latin-1 accents.
    text = head.decode("utf-8", errors="ignore")
    if len(text.encode("utf-8")) < 0.95 * len(head):
        return False
    return not any(ord(c) < 32 and c not in "\t\n\r\f" for c in text)


def sniff_format(data: bytes, name: str = "") -> str:
    """Name the container format from its magic bytes, else from the file extension."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    ext = Path(name).suffix.lower().lstrip(".")
    aliases = {"jpg": "jpeg", "tif": "tiff", "dcm": "dicom", "jp2": "jpeg2000"}
    return aliases.get(ext, ext) or "unknown"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks OpenCV's PNG reader uses: the critical ones, transparency and the EXIF orientation.
# Ancillary chunks besides these change no pixel we read, and a bad one (wrong CRC, an odd
# colour profile) makes libpng print a warning on the terminal.
_PNG_KEPT_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"eXIf"})
# Samples per pixel of each PNG colour type (gray, RGB, palette, gray+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_rows(width: int, height: int, bits: int, interlaced: bool) -> list[tuple[int, int]]:
    """``(rows, bytes per row without the filter byte)`` of each pass of the image data."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            out.append((h, (w * bits + 7) // 8))
    return out


def _checked_png(data: bytes, name: str) -> bytes:
    """The PNG's bytes with only the chunks OpenCV uses, after checking in Python what libpng
    would check: the chunk structure and CRCs, the declared size, and that the image data
    inflates to whole rows with valid filter bytes.

    libpng reports a broken file by printing its own line on the process's stderr (fd 2,
    from C, where no Python redirect reaches) before OpenCV returns; checked here, a broken
    file never reaches it and becomes one InputError. Size limits are applied to the header
    before anything is inflated.
    """
    def broken(problem: str) -> InputError:
        return InputError(f"cannot decode image: PNG data is corrupt or truncated ({problem})", name)

    pos, kept, idat, header, dropped = len(_PNG_SIGNATURE), [_PNG_SIGNATURE], [], None, False
    while True:
        if pos + 12 > len(data):
            raise broken("it ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise broken(f"it ends inside its {kind.decode('latin-1')} chunk")
        body = data[pos + 8:end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            if kind[0] & 0x20:  # ancillary (lower-case first letter): libpng drops it, so do we
                pos, dropped = end, True
                continue
            raise broken(f"CRC error in its {kind.decode('latin-1')} chunk")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise broken("its first chunk is not IHDR")
            header = struct.unpack(">IIBBBBB", body)
            check_size(header[1], header[0], name)
        if kind == b"IDAT":
            idat.append(body)
        if kind in _PNG_KEPT_CHUNKS:
            kept.append(data[pos:end])
        else:
            dropped = True
        pos = end
        if kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise broken(f"colour type {colour} at bit depth {depth} does not exist")
    passes = _png_rows(width, height, depth * _PNG_CHANNELS[colour], bool(interlace))
    expected = sum(h * (1 + n) for h, n in passes)
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(b"".join(idat), expected)
    except zlib.error as exc:
        raise broken(f"its image data does not inflate: {exc}") from None
    if len(raw) < expected:
        raise broken(f"{len(raw)} of {expected} bytes of image data")
    start = 0
    for h, n in passes:  # every row starts with a filter type 0-4
        if np.frombuffer(raw, np.uint8, count=h * (n + 1), offset=start)[::n + 1].max() > 4:
            raise broken("a row has an unknown filter type")
        start += h * (n + 1)
    return b"".join(kept) if dropped or pos != len(data) else data


def _imdecode(data: bytes) -> np.ndarray | None:
    try:
        with _quiet_opencv():
            return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMREAD_FLAGS)
    except cv2.error:
        return None


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_log_level = 0


# OpenCV 5 keeps its log level in cv2.utils.logging; OpenCV 4 as cv2.get/setLogLevel, where
# 0 is LOG_LEVEL_SILENT.
_OPENCV_LOG = getattr(cv2.utils, "logging", cv2)
_OPENCV_LOG_SILENT = getattr(_OPENCV_LOG, "LOG_LEVEL_SILENT", 0)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (e.g. "PNG input buffer is incomplete").

    We report undecodable files as one InputError line; OpenCV's extra line would only
    clutter the CLI output. The log level is process-global, so concurrent decodes share
    one save/restore: the first in saves it, the last out restores it.
    """
    global _quiet_depth, _saved_log_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_log_level = _OPENCV_LOG.getLogLevel()
            # SILENT, not ERROR: a broken TIFF is logged by OpenCV 5 at ERROR level
            # ("TIFF_Error ..."), a line of its own above ours.
            _OPENCV_LOG.setLogLevel(_OPENCV_LOG_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _OPENCV_LOG.setLogLevel(_saved_log_level)


def colourfulness(arr: np.ndarray) -> float:
    """Mean over pixels of (largest - smallest colour channel) / full scale; 0 for gray.

    Alpha is ignored. Computed on at most ~250k pixels (a strided subsample) to stay cheap.
    """
    if arr.ndim != 3 or arr.shape[2] < 3:
        return 0.0
    step = max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))
    rgb = arr[::step, ::step, :3].astype(np.float32)
    scale = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else max(float(rgb.max()), 1e-6)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean() / scale)


def _raster_to_unit_gray(arr: np.ndarray) -> np.ndarray:
    """OpenCV-decoded array (H, W) or (H, W, C) in BGR order -> float32 (H, W) in [0, 1]."""
    dtype = arr.dtype
    # cvtColor on float32 avoids rounding 16-bit luminance back to integers.
    img = arr.astype(np.float32, copy=False)
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 2:  # gray + alpha
            img = img[:, :, 0]
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        else:
            img = cv2.cvtColor(img[:, :, :4], cv2.COLOR_BGRA2GRAY)

    if np.issubdtype(dtype, np.unsignedinteger):
        # astype and cvtColor made a new array: scaled in place, a full-resolution film
        # skips one more 20-MB allocation.
        img = np.multiply(img, np.float32(1.0 / np.iinfo(dtype).max), out=img)
    else:
        img = _float_to_unit(img)
    return np.ascontiguousarray(img, dtype=np.float32)


def _float_to_unit(img: np.ndarray) -> np.ndarray:
    img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0.0 and hi <= 1.0:
        return img
    if hi > lo:
        return (img - lo) / (hi - lo)
    return np.clip(img, 0.0, 1.0)
