"""Raster image reading: normalisation, colour handling, size limits and error messages."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

import boneage.io.image as image_module
import boneage.io.types as types_module
from boneage.errors import InputError
from boneage.io import MAX_PIXELS, MIN_SIDE, read_image, read_image_bytes


def _write(path, arr, ext=None, params=()):
    ok, buf = cv2.imencode(ext or path.suffix, arr, list(params))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _gradient(h=48, w=64):
    return np.add.outer(np.linspace(0, 1, h), np.linspace(0, 1, w)) / 2


def test_smallest_side_is_accepted_and_one_less_refused(tmp_path):
    ok = read_image(_write(tmp_path / "ok.png", np.zeros((MIN_SIDE, MIN_SIDE), np.uint8)))
    assert ok.pixels.shape == (MIN_SIDE, MIN_SIDE)
    with pytest.raises(InputError, match="too small"):
        read_image(_write(tmp_path / "small.png", np.zeros((MIN_SIDE - 1, MIN_SIDE), np.uint8)))


def test_png_8bit_exact_values(tmp_path):
    arr = np.zeros((20, 30), np.uint8)
    arr[0, 0], arr[0, 1], arr[0, 2], arr[19, 29] = 255, 51, 1, 128
    img = read_image(_write(tmp_path / "a.png", arr))
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (20, 30)
    assert img.pixels.flags["C_CONTIGUOUS"]
    assert img.pixels[0, 0] == 1.0
    assert img.pixels[0, 1] == pytest.approx(0.2)
    assert img.pixels[0, 2] == pytest.approx(1 / 255)
    assert img.pixels[19, 29] == pytest.approx(128 / 255)
    assert img.pixels[5, 5] == 0.0
    md = img.metadata
    assert (md.format, md.bit_depth, md.original_shape) == ("png", 8, (20, 30))
    assert md.sex is None and md.birth_date is None and md.patient_age_months is None


def test_png_16bit_exact_values(tmp_path):
    arr = np.zeros((16, 16), np.uint16)
    arr[0, 0], arr[0, 1], arr[0, 2] = 65535, 32768, 4095
    img = read_image(_write(tmp_path / "a.png", arr))
    assert img.pixels[0, 0] == 1.0
    assert img.pixels[0, 1] == pytest.approx(0.50000763, abs=1e-7)
    # 12-bit data in a 16-bit PNG is not stretched: always divided by 65535.
    assert img.pixels[0, 2] == pytest.approx(4095 / 65535, abs=1e-7)
    assert img.pixels[1, 1] == 0.0
    assert img.metadata.bit_depth == 16


def test_jpeg_is_approximately_preserved(tmp_path):
    x = _gradient()
    path = _write(tmp_path / "a.jpg", np.rint(x * 255).astype(np.uint8),
                  params=(cv2.IMWRITE_JPEG_QUALITY, 95))
    img = read_image(path)
    assert img.metadata.format == "jpeg"
    assert np.abs(img.pixels - x).max() < 4 / 255


def test_jpeg_exif_orientation_is_applied(tmp_path):
    # A phone photo stored landscape with "rotate 90" in EXIF must come out portrait.
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, quality=95)
    img = read_image_bytes(buf.getvalue(), "photo.jpg")
    assert img.pixels.shape == (40, 20)
    assert img.metadata.original_shape == (40, 20)


def test_tiff_16bit_exact(tmp_path):
    arr = (np.arange(32 * 24, dtype=np.uint32).reshape(32, 24) * 85 % 65536).astype(np.uint16)
    img = read_image(_write(tmp_path / "a.tif", arr))
    assert img.metadata.format == "tiff" and img.metadata.bit_depth == 16
    np.testing.assert_allclose(img.pixels, arr / 65535.0, atol=1e-7)


def test_float_tiff_kept_inside_unit_range_else_min_max(tmp_path):
    x = (_gradient() * 0.5 + 0.25).astype(np.float32)
    img = read_image(_write(tmp_path / "in.tiff", x))
    assert img.metadata.bit_depth == 32
    np.testing.assert_allclose(img.pixels, x, atol=1e-7)

    y = (x * 1000 - 300).astype(np.float32)
    img = read_image(_write(tmp_path / "out.tiff", y))
    np.testing.assert_allclose(img.pixels, (y - y.min()) / (y.max() - y.min()), atol=1e-6)

    const = np.full((20, 20), 7.5, np.float32)
    img = read_image(_write(tmp_path / "const.tiff", const))
    assert np.all(img.pixels == 1.0)


def test_bmp(tmp_path):
    arr = np.rint(_gradient() * 255).astype(np.uint8)
    img = read_image(_write(tmp_path / "a.bmp", arr))
    assert img.metadata.format == "bmp"
    np.testing.assert_allclose(img.pixels, arr / 255.0, atol=1e-7)


def _luma(r, g, b):
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255


def test_colour_png_converted_to_luminance(tmp_path):
    bgr = np.zeros((16, 24, 3), np.uint8)
    bgr[:, :8] = (0, 0, 255)  # red
    bgr[:, 8:16] = (0, 255, 0)  # green
    bgr[:, 16:] = (200, 100, 50)  # B=200, G=100, R=50
    img = read_image(_write(tmp_path / "c.png", bgr))
    assert img.pixels.shape == (16, 24)
    assert img.pixels[0, 0] == pytest.approx(_luma(255, 0, 0), abs=1e-3)
    assert img.pixels[0, 8] == pytest.approx(_luma(0, 255, 0), abs=1e-3)
    assert img.pixels[0, 16] == pytest.approx(_luma(50, 100, 200), abs=1e-3)


def test_rgba_png_alpha_is_dropped(tmp_path):
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., :3] = (200, 100, 50)
    bgra[:8, :, 3] = 0  # fully transparent half must not change the gray value
    bgra[8:, :, 3] = 255
    img = read_image(_write(tmp_path / "c.png", bgra))
    assert img.pixels.shape == (16, 16)
    np.testing.assert_allclose(img.pixels, _luma(50, 100, 200), atol=1e-3)


def test_16bit_colour_png(tmp_path):
    bgr = np.full((16, 16, 3), 65535, np.uint16)
    img = read_image(_write(tmp_path / "c16.png", bgr))
    np.testing.assert_allclose(img.pixels, 1.0, atol=1e-6)


def test_constant_image_is_allowed(tmp_path):
    img = read_image(_write(tmp_path / "k.png", np.full((16, 16), 0, np.uint8)))
    assert np.all(img.pixels == 0.0) and np.isfinite(img.pixels).all()


def test_unicode_path(tmp_path):
    path = _write(tmp_path / "main_gauche_ñ_手.png", np.full((16, 16), 255, np.uint8), ".png")
    assert read_image(path).pixels.min() == 1.0


def test_read_image_bytes_png():
    ok, buf = cv2.imencode(".png", np.full((16, 20), 51, np.uint8))
    img = read_image_bytes(buf.tobytes())
    assert img.pixels.shape == (16, 20)
    np.testing.assert_allclose(img.pixels, 0.2, atol=1e-7)
    assert img.metadata.format == "png"


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as exc:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(exc.value)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="directory") as exc:
        read_image(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="cannot decode image") as exc:
        read_image(tmp_path / "empty.png")
    assert "empty.png" in str(exc.value) and "empty" in exc.value.problem


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    data = (tmp_path / "full.png")
    _write(data, rng.integers(0, 255, (64, 64), dtype=np.uint8))
    raw = data.read_bytes()
    (tmp_path / "half.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot decode image") as exc:
        read_image(tmp_path / "half.png")
    assert str(exc.value).startswith(str(tmp_path / "half.png") + ": ")
    assert "PNG" in str(exc.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="cannot decode image") as exc:
        read_image(path)
    assert "noise.bin" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_too_small_image(tmp_path):
    path = _write(tmp_path / "tiny.png", np.zeros((4, 4), np.uint8))
    expected = "image size 4x4 is too small; each side must be at least 16 pixels"
    with pytest.raises(InputError, match=expected) as exc:
        read_image(path)
    assert "tiny.png" in str(exc.value)


def test_too_small_message_is_width_by_height(tmp_path):
    path = _write(tmp_path / "thin.png", np.zeros((10, 20), np.uint8))
    with pytest.raises(InputError, match="image size 20x10 is too small"):
        read_image(path)


def test_too_large_image(tmp_path, monkeypatch):
    monkeypatch.setattr(types_module, "MAX_PIXELS", 100)
    path = _write(tmp_path / "big.png", np.zeros((16, 17), np.uint8))
    expected = r"image size 17x16 \(272 pixels\) exceeds the maximum of 100 pixels"
    with pytest.raises(InputError, match=expected) as exc:
        read_image(path)
    assert "big.png" in str(exc.value)


def test_read_image_bytes_errors_use_the_given_name():
    with pytest.raises(InputError, match="cannot decode image") as exc:
        read_image_bytes(np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes())
    assert str(exc.value).startswith("<upload>: ")
    with pytest.raises(InputError) as exc:
        read_image_bytes(b"", name="scan.png")
    assert str(exc.value).startswith("scan.png: ")


def test_decode_failure_prints_nothing_and_keeps_opencv_log_level(tmp_path, capfd):
    log = getattr(cv2.utils, "logging", cv2)  # OpenCV 5 and 4
    level = log.getLogLevel()
    ok, buf = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError):
        read_image_bytes(buf.tobytes()[:60], name="cut.png")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert log.getLogLevel() == level


# -- native decoders never write to the terminal (checked at the file-descriptor level) ----

def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with(raw_rows: bytes, width: int, height: int, interlace: int = 0, extra: bytes = b"") -> bytes:
    """A hand-made 8-bit gray PNG from its filtered rows (zlib-compressed here)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra
            + _chunk(b"IDAT", zlib.compress(raw_rows)) + _chunk(b"IEND", b""))


def _adam7(gray: np.ndarray) -> bytes:
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    return b"".join(b"\x00" + row.tobytes() for x0, y0, dx, dy in passes for row in gray[y0::dy, x0::dx]
                    if row.size)


def _broken_pngs() -> dict[str, bytes]:
    import struct
    import zlib

    gray = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    whole = cv2.imencode(".png", gray)[1].tobytes()
    at = whole.find(b"IDAT")
    length = struct.unpack(">I", whole[at - 4:at])[0]
    garbage = np.random.default_rng(1).integers(0, 256, length, dtype=np.uint8).tobytes()
    rows = b"".join(b"\x00" + r.tobytes() for r in gray[:32, :32])
    return {
        "truncated": whole[: len(whole) // 2],
        "cut at the end": whole[:-20],
        # the garbage has a correct CRC: only inflating the data finds it
        "garbage IDAT": whole[:at + 4] + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
        + whole[at + 8 + length:],
        "IDAT CRC": whole[:at + 4 + length] + b"\0\0\0\0" + whole[at + 8 + length:],
        "filter byte": _png_with(b"\x07" + rows[1:], 32, 32),
    }


@pytest.mark.parametrize("case", list(_broken_pngs()))
def test_a_broken_png_is_one_error_and_libpng_prints_nothing(case, capfd):
    with pytest.raises(InputError, match="PNG data is corrupt or truncated") as exc:
        read_image_bytes(_broken_pngs()[case], name="scan.png")
    assert str(exc.value).startswith("scan.png: ") and "\n" not in str(exc.value)
    assert capfd.readouterr() == ("", "")  # libpng writes to fd 2 from C: capfd sees it


def test_a_truncated_tiff_is_one_error_and_opencv_prints_nothing(capfd):
    whole = cv2.imencode(".tif", np.zeros((300, 300), np.uint8))[1].tobytes()
    with pytest.raises(InputError, match="TIFF data is corrupt or truncated"):
        read_image_bytes(whole[: len(whole) // 2], name="scan.tif")
    assert capfd.readouterr() == ("", "")


def test_pngs_the_check_passes_decode_to_the_same_pixels(capfd):
    """Interlaced rows, ancillary chunks (dropped before OpenCV sees them, a bad CRC among
    them) and appended bytes after IEND: the pixels are OpenCV's own."""
    gray = np.random.default_rng(2).integers(0, 256, (37, 53), dtype=np.uint8)
    text = _chunk(b"tEXt", b"Comment\0hello")
    bad_crc = _chunk(b"zTXt", b"x\0\0abc")[:-4] + b"\0\0\0\0"
    rows = b"".join(b"\x00" + r.tobytes() for r in gray)
    for data in (_png_with(_adam7(gray), 53, 37, interlace=1), _png_with(rows, 53, 37, extra=text + bad_crc),
                 cv2.imencode(".png", gray)[1].tobytes() + b"trailing"):
        pixels = read_image_bytes(data, name="ok.png").pixels
        assert np.array_equal(np.round(pixels * 255).astype(np.uint8), gray)
    assert capfd.readouterr() == ("", "")


def test_a_png_declaring_too_many_pixels_is_refused_before_inflating(monkeypatch):
    monkeypatch.setattr(types_module, "MAX_PIXELS", 100)
    with pytest.raises(InputError, match="exceeds the maximum of 100 pixels"):
        image_module._checked_png(_png_with(b"", 50, 50), "bomb.png")


@pytest.mark.parametrize("text", [b"id,sex\n1377,M\n1378,F\n" * 40, "patient;âge\r\n1;12,5\r\n".encode() * 30,
                                  b"\xef\xbb\xbfid\tsex\n1\tM\n"])
def test_text_is_not_an_image(tmp_path, text):
    path = tmp_path / "labels.csv"  # the extension once named the "format": "CSV data is corrupt"
    path.write_bytes(text)
    with pytest.raises(InputError) as exc:
        read_image(path)
    assert str(exc.value) == f"{path}: not an image (looks like text)"


def test_binary_under_a_non_image_extension_is_not_a_recognised_format(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a recognised image format"):
        read_image(path)
