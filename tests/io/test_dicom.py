"""DICOM photometry, metadata and errors, with files built by write_dicom and by hand."""

from __future__ import annotations

import datetime

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from boneage.errors import InputError
from boneage.io import parse_age_months, read_image, read_image_bytes, write_dicom


def _image(h=40, w=56, seed=0):
    """A test image that does not span [0, 1], so any stretching would show."""
    rng = np.random.default_rng(seed)
    smooth = np.add.outer(np.linspace(0, 1, h), np.linspace(0, 1, w)) / 2
    return 0.1 + 0.8 * (0.7 * smooth + 0.3 * rng.random((h, w)))




# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_write_dicom_round_trip(tmp_path, photometric, bits):
    x = _image()
    path = write_dicom(tmp_path / "rt.dcm", x, photometric=photometric, bits_stored=bits)
    img = read_image(path)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == x.shape
    assert np.abs(img.pixels - x).max() <= 0.5 / (2**bits - 1) + 1e-6
    md = img.metadata
    assert (md.format, md.bit_depth, md.photometric) == ("dicom", bits, photometric)
    assert md.original_shape == x.shape


def test_write_dicom_file_is_valid_secondary_capture(tmp_path):
    path = write_dicom(tmp_path / "sc.dcm", _image(), photometric="MONOCHROME1")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (40, 56, 1)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
    assert "NumberOfFrames" not in ds


def test_monochrome1_stores_inverted_values(tmp_path):
    x = np.zeros((16, 16))
    x[0, 0] = 1.0
    x[0, 1] = 0.25
    path = write_dicom(tmp_path / "m1.dcm", x, photometric="MONOCHROME1")
    raw = pydicom.dcmread(path).pixel_array
    assert raw[0, 0] == 0 and raw[1, 1] == 65535
    assert raw[0, 1] == round(0.75 * 65535)
    img = read_image(path)
    assert img.pixels[0, 0] == 1.0 and img.pixels[1, 1] == 0.0
    assert img.pixels[0, 1] == pytest.approx(0.25, abs=1e-5)


def test_hand_built_monochrome1_without_window_is_inverted(tmp_path, hand_built_dicom):
    stored = np.zeros((16, 16), np.uint16)
    stored[0, 0], stored[0, 1], stored[0, 2] = 65535, 16384, 0
    stored[1:] = 65535
    img = read_image(hand_built_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))
    assert img.pixels[0, 0] == 0.0
    assert img.pixels[0, 2] == 1.0
    assert img.pixels[0, 1] == pytest.approx(1 - 16384 / 65535, abs=1e-6)


def test_without_window_min_max_to_data_range(tmp_path, hand_built_dicom):
    stored = np.full((16, 16), 100, np.uint16)
    stored[0, 0], stored[0, 1] = 300, 150
    img = read_image(hand_built_dicom(tmp_path / "mm.dcm", stored))
    assert img.pixels[0, 0] == 1.0 and img.pixels[5, 5] == 0.0
    assert img.pixels[0, 1] == pytest.approx(0.25)


def test_constant_image_uses_bits_stored_range(tmp_path, hand_built_dicom):
    stored = np.full((16, 16), 1024, np.uint16)
    img = read_image(hand_built_dicom(tmp_path / "k.dcm", stored, bits_stored=12))
    np.testing.assert_allclose(img.pixels, 1024 / 4095, atol=1e-7)


def test_window_center_width_applied(tmp_path, hand_built_dicom):
    stored = np.zeros((16, 16), np.uint16)
    stored[0, :5] = [400, 750, 1000, 1250, 2000]
    # LINEAR: c - 0.5 = 1000 and w - 1 = 1000, so [500, 1500] maps onto the full output range.
    path = hand_built_dicom(tmp_path / "w.dcm", stored, WindowCenter=1000.5, WindowWidth=1001)
    row = read_image(path).pixels[0, :5]
    np.testing.assert_allclose(row, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


def test_write_dicom_explicit_window(tmp_path):
    x = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    # Window over the middle half of the 16-bit range: contrast doubles around 0.5.
    full = 65535
    path = write_dicom(tmp_path / "w.dcm", x, window=(full / 2 + 0.5, full / 2 + 1))
    img = read_image(path)
    np.testing.assert_allclose(img.pixels, np.clip((x - 0.25) * 2, 0, 1), atol=1e-4)


def test_rescale_slope_and_intercept_hand_built(tmp_path, hand_built_dicom):
    # Modality value = 2 * stored - 1000; the window is in modality units.
    stored = np.full((16, 16), 500, np.uint16)
    stored[0, :5] = [500, 750, 1000, 1250, 1500]  # -> modality 0, 500, 1000, 1500, 2000
    path = hand_built_dicom(
        tmp_path / "r.dcm", stored,
        RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000.5, WindowWidth=1001,
    )
    row = read_image(path).pixels[0, :5]
    np.testing.assert_allclose(row, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("slope,intercept", [(2.0, -1000.0), (2.0, 1000.0), (4.0, 0.0)])
def test_write_dicom_rescale_round_trip(tmp_path, slope, intercept):
    x = _image()
    path = write_dicom(tmp_path / "r.dcm", x, rescale_slope=slope, rescale_intercept=intercept,
                       bits_stored=12)
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleSlope) == slope and float(ds.RescaleIntercept) == intercept
    np.testing.assert_allclose(ds.pixel_array * slope + intercept, x * 4095, atol=abs(slope))
    assert ds.PixelRepresentation == (1 if intercept > 0 else 0)
    img = read_image(path)
    assert np.abs(img.pixels - x).max() <= abs(slope) / 4095


def test_bits_stored_12_in_16_bit_allocation(tmp_path, hand_built_dicom):
    values = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16  # 0 .. 4080
    path = tmp_path / "b12.dcm"
    hand_built_dicom(path, values, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    ds = pydicom.dcmread(path)
    # Garbage in the 4 unused high bits (overlay bits in old files) must be masked away.
    ds.PixelData = (values | 0xF000).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    img = read_image(path)
    assert img.metadata.bit_depth == 12
    np.testing.assert_allclose(img.pixels, values / 4095, atol=1e-6)


def test_voi_lut_sequence_preferred_over_window(tmp_path, hand_built_dicom):
    stored = np.zeros((16, 16), np.uint16)
    stored[0, :4] = [0, 100, 255, 3000]
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # 256 entries, first input 0, 8 bits
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # an inverting LUT
    path = hand_built_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item],
                       WindowCenter=1000, WindowWidth=10)
    row = read_image(path).pixels[0, :4]
    np.testing.assert_allclose(row, [1.0, 155 / 255, 0.0, 0.0], atol=1e-6)


def test_monochrome1_dicom_matches_8bit_png(tmp_path):
    x = _image(64, 48, seed=3)
    png = tmp_path / "hand.png"
    ok, buf = cv2.imencode(".png", np.rint(x * 255).astype(np.uint8))
    png.write_bytes(buf.tobytes())
    dcm = write_dicom(tmp_path / "hand.dcm", x, photometric="MONOCHROME1", bits_stored=16)
    diff = np.abs(read_image(dcm).pixels - read_image(png).pixels).max()
    assert diff <= 1 / 255


def test_rgb_dicom_converted_to_gray(tmp_path, hand_built_dicom):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 50, 100, 200
    img = read_image(hand_built_dicom(tmp_path / "rgb.dcm", rgb, "RGB", bits_stored=8))
    assert img.pixels.shape == (16, 16)
    np.testing.assert_allclose(img.pixels, (0.299 * 50 + 0.587 * 100 + 0.114 * 200) / 255,
                               atol=1e-3)


# ----------------------------------------------------------------------------- metadata


def test_metadata_written_and_read_back(tmp_path):
    path = write_dicom(
        tmp_path / "md.dcm", _image(), sex="f", birth_date=datetime.date(2014, 3, 9),
        study_date=datetime.date(2024, 5, 1), patient_age="010Y", patient_id="P-007",
    )
    md = read_image(path).metadata
    assert md.sex == "F"
    assert md.birth_date == datetime.date(2014, 3, 9)
    assert md.study_date == datetime.date(2024, 5, 1)
    assert md.patient_age_months == 120.0
    assert md.patient_id == "P-007"


def test_metadata_absent_is_none(tmp_path):
    md = read_image(write_dicom(tmp_path / "none.dcm", _image())).metadata
    assert (md.sex, md.birth_date, md.study_date, md.patient_age_months, md.patient_id) == (
        None, None, None, None, None)


# Lower-case 'm' and a free-text age are invalid DICOM on purpose: files in the wild have them.
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_metadata_hand_built_fallbacks_and_bad_values(tmp_path, hand_built_dicom):
    stored = np.zeros((16, 16), np.uint16)
    path = hand_built_dicom(tmp_path / "m.dcm", stored, PatientSex="O", PatientAge="006M",
                       AcquisitionDate="20230102", SeriesDate="20220101")
    md = read_image(path).metadata
    assert md.sex is None
    assert md.patient_age_months == 6.0
    assert md.study_date == datetime.date(2023, 1, 2)

    path = hand_built_dicom(tmp_path / "m2.dcm", stored, PatientSex="m", PatientAge="10 years",
                       SeriesDate="20220101")
    md = read_image(path).metadata
    assert md.sex == "M"
    assert md.patient_age_months is None
    assert md.study_date == datetime.date(2022, 1, 1)


def test_study_date_tags_in_order_and_which_one_is_kept(tmp_path, hand_built_dicom):
    stored = np.zeros((16, 16), np.uint16)
    path = hand_built_dicom(tmp_path / "c.dcm", stored, ContentDate="20210304", SeriesDate="20200101")
    md = read_image(path).metadata
    assert (md.study_date, md.study_date_tag) == (datetime.date(2021, 3, 4), "ContentDate")
    path = hand_built_dicom(tmp_path / "a.dcm", stored, AcquisitionDate="20210305", ContentDate="20210304")
    assert read_image(path).metadata.study_date_tag == "AcquisitionDate"
    path = hand_built_dicom(tmp_path / "s.dcm", stored, StudyDate="20210306", AcquisitionDate="20210305")
    md = read_image(path).metadata
    assert (md.study_date, md.study_date_tag) == (datetime.date(2021, 3, 6), "StudyDate")
    assert read_image(hand_built_dicom(tmp_path / "n.dcm", stored)).metadata.study_date_tag is None


@pytest.mark.parametrize("age,months", [
    ("010Y", 120.0), ("006M", 6.0), ("012W", 12 * 7 * 12 / 365.25), ("030D", 30 * 12 / 365.25),
    ("", None), (None, None), ("10", None), ("abcY", None),
])
def test_parse_age_months(age, months):
    assert parse_age_months(age) == (None if months is None else pytest.approx(months))


# ----------------------------------------------------------------------------- bytes


def test_read_image_bytes_dicom(tmp_path):
    x = _image()
    data = write_dicom(tmp_path / "b.dcm", x, sex="M").read_bytes()
    img = read_image_bytes(data)
    assert img.metadata.format == "dicom" and img.metadata.sex == "M"
    assert np.abs(img.pixels - x).max() < 1e-4


def test_dicom_without_preamble_is_recognised(tmp_path):
    ds = pydicom.dcmread(write_dicom(tmp_path / "p.dcm", _image()))
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / "raw.dcm"
    ds.save_as(raw, enforce_file_format=False, little_endian=True, implicit_vr=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert read_image(raw).metadata.format == "dicom"


# ----------------------------------------------------------------------------- errors


def test_dicom_without_pixel_data(tmp_path, hand_built_dicom):
    path = hand_built_dicom(tmp_path / "nopix.dcm", None)
    with pytest.raises(InputError, match="DICOM file has no pixel data") as exc:
        read_image(path)
    assert "nopix.dcm" in str(exc.value)


def test_three_frame_dicom(tmp_path, hand_built_dicom):
    path = hand_built_dicom(tmp_path / "vol.dcm", np.zeros((3, 16, 16), np.uint16))
    with pytest.raises(
        InputError,
        match="DICOM holds a 3-D volume of 3 frames; a single 2-D radiograph is required",
    ) as exc:
        read_image(path)
    assert "vol.dcm" in str(exc.value)


def test_tiny_dicom(tmp_path, hand_built_dicom):
    path = hand_built_dicom(tmp_path / "tiny.dcm", np.zeros((4, 4), np.uint16))
    with pytest.raises(InputError, match="image size 4x4 is too small") as exc:
        read_image(path)
    assert "tiny.dcm" in str(exc.value)


def test_truncated_dicom(tmp_path):
    data = write_dicom(tmp_path / "full.dcm", _image()).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot decode image") as exc:
        read_image(tmp_path / "cut.dcm")
    assert "cut.dcm" in str(exc.value) and "\n" not in str(exc.value)


def test_write_dicom_never_overwrites_by_default(tmp_path):
    path = tmp_path / "exists.dcm"
    path.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists") as exc:
        write_dicom(path, _image())
    assert "exists.dcm" in str(exc.value)
    assert path.read_bytes() == b"keep me"
    write_dicom(path, _image(), overwrite=True)
    assert read_image(path).metadata.format == "dicom"


@pytest.mark.parametrize("kwargs,phrase", [
    ({"pixels": np.full((16, 16), 1.5)}, "must lie in"),
    ({"pixels": np.zeros((16, 16, 3))}, "2-D"),
    ({"photometric": "RGB"}, "photometric"),
    ({"bits_stored": 17}, "bits_stored"),
    ({"bits_stored": 8, "rescale_intercept": -1000.0}, "do not fit"),
    ({"sex": "X"}, "sex"),
    ({"patient_age": "10 years"}, "patient_age"),
    ({"window": (100.0, 0.0)}, "window"),
])
def test_write_dicom_rejects_bad_arguments(tmp_path, kwargs, phrase):
    kwargs = {"pixels": _image(), **kwargs}
    path = tmp_path / "bad.dcm"
    with pytest.raises(InputError, match=phrase):
        write_dicom(path, **kwargs)
    assert not path.exists()


def _jpeg_ls_dicom(path):
    """A JPEG-LS compressed DICOM (the codestream is not decodable: no decoder gets that far)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(100)])
    ds.save_as(path, enforce_file_format=True)
    return path


def test_compressed_dicom_without_a_decoder_is_one_line_naming_what_to_install(tmp_path, capfd):
    from importlib.util import find_spec

    if any(find_spec(m) for m in ("gdcm", "pylibjpeg", "jpeg_ls")):
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(InputError) as exc:
        read_image(_jpeg_ls_dicom(tmp_path / "jls.dcm"))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'jls.dcm'}: cannot decode image: DICOM pixel data is "
                              "compressed as JPEG-LS Lossless Image Compression and no decoder")
    assert "\n" not in message and "pylibjpeg" in message
    assert capfd.readouterr() == ("", "")
