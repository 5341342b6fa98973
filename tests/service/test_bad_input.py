"""Every kind of bad input gets its status code and one message, and the server goes on."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest



def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _check_one_message(r, status, phrase):
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and phrase in detail, detail
    assert "\n" not in detail and "Traceback" not in detail


def _still_serving(client, png_bytes):
    assert client.get("/health").status_code == 200


UPLOADS = {
    # name: (bytes or builder, form fields, status, phrase)
    "zero-byte": (lambda tmp, png, dicom: b"", {"sex": "M"}, 422, "file is empty"),
    "truncated png": (lambda tmp, png, dicom: png[: len(png) // 2], {"sex": "M"}, 422, "PNG data is corrupt or truncated"),
    "dicom without pixels": (lambda tmp, png, dicom: dicom(tmp / "nopix.dcm", None).read_bytes(), {"sex": "M"}, 422,
                             "DICOM file has no pixel data"),
    "3-D dicom": (lambda tmp, png, dicom: dicom(tmp / "vol.dcm", np.zeros((3, 16, 16), np.uint16)).read_bytes(), {"sex": "M"}, 422,
                  "3-D volume of 3 frames"),
    "declared 100000x100000 png": (lambda tmp, png, dicom: _png_declaring(100000, 100000), {"sex": "M"}, 422,
                                   "image size 100000x100000"),
    "not an image": (lambda tmp, png, dicom: b"hello, this is text and no radiograph\n" * 10, {"sex": "M"}, 415,
                     "not an image (looks like text)"),
    "random bytes": (lambda tmp, png, dicom: bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8)),
                     {"sex": "M"}, 415, "not a recognised image format"),
    "sex X": (lambda tmp, png, dicom: png, {"sex": "X"}, 422, "sex must be M or F, got 'X'"),
    "no sex for a png": (lambda tmp, png, dicom: png, {"force": "true"}, 422,
                         "sex is unknown: the file has no sex tag and none was given; send the form field sex=M or sex=F"),
    "bad birth date": (lambda tmp, png, dicom: png, {"sex": "F", "birth_date": "2015-02-30", "study_date": "2024-01-01"},
                       422, "birth_date"),
    "bad age": (lambda tmp, png, dicom: png, {"sex": "F", "age_months": "ten"}, 422, "age_months must be a number"),
    "age out of range": (lambda tmp, png, dicom: png, {"sex": "F", "age_months": "500", "force": "true"}, 422, "500"),
    "bad flag": (lambda tmp, png, dicom: png, {"sex": "F", "force": "maybe"}, 422, "force must be true or false"),
    "unknown field": (lambda tmp, png, dicom: png, {"sex": "F", "birthdate": "2015-01-01"}, 422,
                      "unknown form field 'birthdate'"),
}


# The report shares the predict path's checks: three cases suffice there.
@pytest.mark.parametrize("path, case", [("/v1/predict", case) for case in UPLOADS]
                         + [("/v1/report", case) for case in ("zero-byte", "3-D dicom", "sex X", "no sex for a png")])
def test_bad_upload(client, png_bytes, tmp_path, hand_built_dicom, case, path):
    make, fields, status, phrase = UPLOADS[case]
    upload = make(tmp_path, png_bytes, hand_built_dicom)
    r = client.post(path, files={"file": ("upload.bin", upload, "application/octet-stream")},
                    data=fields)
    _check_one_message(r, status, phrase)
    _still_serving(client, png_bytes)


def test_missing_file_field(client, png_bytes):
    r = client.post("/v1/predict", files={"other": ("a.txt", b"x", "text/plain")}, data={"sex": "M"})
    _check_one_message(r, 422, "unexpected file field 'other'")
    r = client.post("/v1/predict", data={"sex": "M"}, files={})
    # With no file at all httpx sends a urlencoded form: not multipart.
    assert r.status_code in (415, 422) and r.json()["detail"]
    boundary = "XyZ"
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"sex\"\r\n\r\nM\r\n--{boundary}--\r\n".encode()
    r = client.post("/v1/predict", content=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    _check_one_message(r, 422, "no image: send it as the multipart file field 'file'")
    _still_serving(client, png_bytes)


def test_not_multipart(client, png_bytes):
    r = client.post("/v1/predict", json={"sex": "M"})
    _check_one_message(r, 415, "multipart/form-data")
    _still_serving(client, png_bytes)


def test_body_over_the_limit_by_content_length(client, png_bytes):
    LIMIT = client.app.state.max_upload_bytes
    big = b"\0" * (LIMIT + 1)
    r = client.post("/v1/predict", files={"file": ("big.png", big, "image/png")}, data={"sex": "M"})
    _check_one_message(r, 413, f"exceeds the limit of {LIMIT} bytes")
    _still_serving(client, png_bytes)


def test_body_over_the_limit_while_streaming(client, png_bytes):
    LIMIT = client.app.state.max_upload_bytes
    # Chunked, no Content-Length: the limit must be found by counting what arrives.

    def body():
        head = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n")
        yield head
        for _ in range(LIMIT // 65536 + 10):
            yield b"\0" * 65536
        yield b"\r\n--B--\r\n"

    r = client.post("/v1/predict", content=body(), headers={"Content-Type": "multipart/form-data; boundary=B"})
    _check_one_message(r, 413, "exceeds the limit")
    _still_serving(client, png_bytes)


def test_unknown_path_and_method(client):
    _check_one_message(client.get("/v1/nothing"), 404, "Not Found")
    _check_one_message(client.get("/v1/predict"), 405, "Method Not Allowed")
