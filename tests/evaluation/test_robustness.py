"""The robustness report: preparations, the table, the paired comparison and the CLI."""

import json

import numpy as np
import pytest

from boneage.data.labels import load_samples
from boneage.errors import ConfigError, InputError
from boneage.evaluation.robustness import (
    PREPARATIONS, PrepContext, paired_consistency, resolve_preparations, run_robustness,
)
from boneage.inference.loader import load_predictor


def ctx(tmp_path, grid=20):
    return PrepContext(grid, np.random.default_rng(0), tmp_path)


def test_every_preparation_keeps_a_readable_image(tmp_path):
    img = np.random.default_rng(1).random((60, 48)).astype(np.float32)
    for prep in PREPARATIONS.values():
        out = prep.apply(img, ctx(tmp_path))
        assert out.ndim == 2 and out.dtype == np.float32, prep.name
        assert 0.0 <= out.min() and out.max() <= 1.0, prep.name


#: Preparations that store the image in a file and read it back: they change it only by
#: quantising it to their bit depth.
ROUND_TRIPS = ("png_16bit", "dicom_12bit", "dicom_16bit_monochrome1")


def test_every_preparation_changes_the_image(tmp_path):
    """A preparation that returned its input would report a shift of 0: "robust" for nothing."""
    img = np.random.default_rng(1).random((60, 48)).astype(np.float32)  # on no bit depth's grid
    for prep in PREPARATIONS.values():
        out = prep.apply(img.copy(), ctx(tmp_path))
        if prep.name == "as_stored":
            assert np.array_equal(out, img)
        elif prep.name in ROUND_TRIPS:
            assert out.shape == img.shape and not np.array_equal(out, img), prep.name
        elif prep.name == "quantize_6bit":  # moves each pixel by less than half a level
            assert not np.array_equal(out, img) and len(np.unique(out)) <= 64
        else:
            assert out.shape != img.shape or np.abs(out - img).max() > 0.05, prep.name


def test_dicom_round_trips_write_what_they_say(tmp_path):
    import pydicom

    img = np.random.default_rng(4).random((40, 30)).astype(np.float32)
    for name, bits, photometric in (("dicom_12bit", 12, "MONOCHROME2"), ("dicom_16bit_monochrome1", 16, "MONOCHROME1")):
        PREPARATIONS[name].apply(img, ctx(tmp_path))
        ds = pydicom.dcmread(tmp_path / "roundtrip.dcm")
        assert (ds.BitsStored, ds.PhotometricInterpretation) == (bits, photometric), name
        assert ds.pixel_array.max() < 2 ** bits


def test_file_round_trips_give_back_the_same_pixels(tmp_path):
    img = np.round(np.random.default_rng(2).random((40, 30)) * 255).astype(np.float32) / 255
    for name in ("png_16bit", "dicom_12bit", "dicom_16bit_monochrome1"):
        out = PREPARATIONS[name].apply(img, ctx(tmp_path))
        np.testing.assert_allclose(out, img, atol=1 / 4095 + 1e-6, err_msg=name)
    # shrinking goes to the grid, for small sources through a 4x larger one
    assert PREPARATIONS["shrink_nearest"].apply(img, ctx(tmp_path, 20)).shape == (20, 20)


def test_unknown_preparation_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown preparation 'jpeg_q5'.*valid names: .*jpeg_q20"):
        resolve_preparations(["jpeg_q5"])
    names = [p.name for p in resolve_preparations(["hflip", "as_stored", "hflip"])]
    assert names == ["as_stored", "hflip"]


def test_shifts_are_measured_against_the_stored_estimate(synthetic_folder, tiny_model):
    predictor = load_predictor(tiny_model)
    samples = load_samples(synthetic_folder)[:6]
    result = run_robustness(predictor, samples, resolve_preparations(["hflip", "gamma_1.4"]))
    rows = {r["preparation"]: r for r in result["rows"]}
    assert list(rows) == ["as_stored", "hflip", "gamma_1.4"]
    assert rows["as_stored"]["mean_shift"] == 0.0 and rows["as_stored"]["n"] == 6
    preds = result["predictions"]
    flip_shift = np.mean([preds[s.id]["hflip"] - preds[s.id]["as_stored"] for s in samples])
    assert rows["hflip"]["mean_shift"] == pytest.approx(flip_shift)
    true = np.array([s.boneage for s in samples])
    stored = np.array([preds[s.id]["as_stored"] for s in samples])
    assert rows["as_stored"]["mae"] == pytest.approx(np.mean(np.abs(stored - true)))
    # the as-stored estimate is exactly what predict gives
    from boneage.io import read_image
    s0 = samples[0]
    assert preds[s0.id]["as_stored"] == pytest.approx(
        predictor.predict(read_image(s0.path).pixels, "M" if s0.male else "F").bone_age_months, abs=1e-4)


def test_paired_consistency_matches_ids(synthetic_folder, tiny_model):
    predictor = load_predictor(tiny_model)
    samples = load_samples(synthetic_folder)[:4]
    same = paired_consistency(predictor, samples, load_samples(synthetic_folder))
    assert same["n"] == 4 and same["mean_abs_difference"] < 1e-3
    with pytest.raises(InputError, match="shares no image id"):
        paired_consistency(predictor, samples, load_samples(synthetic_folder)[10:12])


def test_robustness_command_writes_its_table_and_plot(cli, synthetic_folder, tiny_model, tmp_path):
    out = tmp_path / "rob"
    code, stdout, err = cli("robustness", synthetic_folder, "--model", tiny_model, "--limit", 5,
                            "--preparations", "shrink_nearest,jpeg_q20,marker", "--pair-with",
                            synthetic_folder, "--out", out, "--quiet")
    assert code == 0, err
    assert "| shrink_nearest |" in stdout and "Paired preparations (5 radiographs)" in stdout
    for name in ("robustness.md", "robustness.csv", "robustness.json", "robustness.png",
                 "robustness_predictions.csv", "paired.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "robustness.json").read_text())
    assert [r["preparation"] for r in summary["rows"]] == ["as_stored", "shrink_nearest", "jpeg_q20", "marker"]
    assert summary["pairs"]["mean_abs_difference"] < 1e-3
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--preparations", "gamma_9"], "unknown preparation 'gamma_9'"),
    (["--limit", "-1"], "argument --limit: must be >= 1, got -1"),
])
def test_robustness_command_bad_input_is_one_line(cli, synthetic_folder, tiny_model, args, message):
    code, out, err = cli("robustness", synthetic_folder, "--model", tiny_model, *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_robustness_needs_labels(cli, tmp_path, tiny_model):
    folder = tmp_path / "nolabels"
    (folder / "images").mkdir(parents=True)
    code, out, err = cli("robustness", folder, "--model", tiny_model)
    assert code == 2 and "label file not found" in err and len(err.strip().splitlines()) == 1


def test_docs_list_every_preparation():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "robustness.md").read_text()
    missing = [n for n in PREPARATIONS if f"`{n}`" not in text]
    assert not missing, f"docs/robustness.md does not describe {missing}"
