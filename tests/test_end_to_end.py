"""The bundled model on real radiographs: accuracy on held-back data and DICOM = PNG."""

import json

import numpy as np
import pytest

from boneage.cli.main import main
from boneage.inference import default_model_path, read_model_metadata
from boneage.io import read_image, write_dicom
from boneage.inference.loader import load_predictor


def test_bundled_model_is_installed_and_self_describing():
    from boneage.engine.check import check_recipe

    recipe, info = read_model_metadata(default_model_path())
    check_recipe(recipe)  # every component of its stored recipe still builds and runs
    assert recipe.target.mean is not None and recipe.target.std > 0
    assert len(info["val_ids"]) == info["n_val"] > 0  # evaluate --holdout can find them again
    assert default_model_path().stat().st_size < 60 * 2**20


def test_bundled_model_holdout_mae_at_most_10_months(capsys, data_dir):
    code = main(["evaluate", str(data_dir / "rsna-100px"), "--holdout", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 1108
    assert summary["mae"] <= 10.0, summary


def test_16bit_monochrome1_dicom_predicts_within_a_month_of_its_png(tmp_path, data_dir):
    png = sorted((data_dir / "rsna-fullres" / "images").glob("*.png"))[0]
    pixels = read_image(png).pixels
    dcm = write_dicom(tmp_path / "hand.dcm", pixels, photometric="MONOCHROME1", bits_stored=16,
                      rescale_slope=1.0, rescale_intercept=0.0, sex="F")
    loaded = read_image(dcm)
    assert loaded.metadata.photometric == "MONOCHROME1" and loaded.metadata.bit_depth == 16
    p = load_predictor()
    a = p.predict(pixels, "F").bone_age_months
    b = p.predict(loaded.pixels, loaded.metadata.sex).bone_age_months
    assert abs(a - b) < 1.0, (a, b)


def test_synthetic_16bit_dicom_matches_png_without_real_data(tmp_path):
    from boneage.data.synthetic import write_example_radiograph

    png = write_example_radiograph(tmp_path / "s.png", age_months=100, sex="M", size=256)
    pixels = read_image(png).pixels
    dcm = write_dicom(tmp_path / "s.dcm", pixels, photometric="MONOCHROME1", bits_stored=16,
                      rescale_slope=2.0, rescale_intercept=-1000.0)
    np.testing.assert_allclose(read_image(dcm).pixels, pixels, atol=1 / 255)
    p = load_predictor()
    assert abs(p.predict(pixels, "M").bone_age_months
               - p.predict(read_image(dcm).pixels, "M").bone_age_months) < 1.0


def test_raw_radiographs_read_like_their_299px_copies(data_dir):
    """Issues 8 and 28: the raw RSNA files and their area-shrunk 299-px copies, same hands.

    The bundled 320-px model trained on the 299-px copies: mean difference +0.64, mean absolute
    0.91 months (the 288-px model before it: +0.49, 0.87; the 256-px model: +0.09, 0.67; the
    224-px model: +0.18, 0.82; issue 28's bounds: 2 and ±1.5). (The 100-px nearest-neighbour
    copies were issue 8's pairing, for the 112-px model trained on them: +1.45 and 1.67 then;
    the 288-px model read them +4.62 months apart, 6.54 mean absolute: these models are not made
    for aliased copies.)"""
    from boneage.data.labels import load_samples
    from boneage.evaluation.robustness import paired_consistency

    if not (data_dir / "rsna-299px" / "labels.csv").is_file():
        pytest.skip(f"rsna-299px not found in {data_dir}")
    pairs = paired_consistency(load_predictor(), load_samples(data_dir / "rsna-raw13"),
                               load_samples(data_dir / "rsna-299px"))
    assert pairs["n"] == 13
    assert pairs["mean_abs_difference"] <= 2.0, pairs
    assert abs(pairs["mean_difference"]) <= 1.5, pairs


# Mean |nearest - area| over the five synthetic hands below: first bundled model 14.1 months,
# retrained model 4.1 (synthetic hands are further from its training images than real ones).
SYNTHETIC_SHRINK_BOUND = 7.0


def test_nearest_and_area_shrinking_give_about_the_same_bone_age_without_real_data():
    """The same synthetic radiograph shrunk the aliased way (as rsna-100px was made) and the
    anti-aliased way: the first bundled model read them 14 months apart on average."""
    from boneage.data.synthetic import make_radiograph
    from boneage.transforms import functional as F

    p = load_predictor()
    diffs = []
    for i, age in enumerate([40, 80, 120, 160, 200]):
        image = make_radiograph(age, "MF"[i % 2], size=(1000, 800), seed=i).image
        area, nearest = F.resample(image, 100, "area"), F.resample(image, 100, "nearest")
        a, n = p.predict_batch([area, nearest], ["M", "M"])
        diffs.append(n.bone_age_months - a.bone_age_months)
    assert np.mean(np.abs(diffs)) <= SYNTHETIC_SHRINK_BOUND, diffs


def test_frames_do_not_move_the_raw_radiographs(data_dir):
    """Issue 8: a white or black frame around the 13 raw RSNA files. Before the unframe step a
    white frame moved them +3.24 months on average (one film on a grey background 15 months);
    with it -0.29 (white) and -0.11 (black). The bound is the issue's."""
    from boneage.data.labels import load_samples
    from boneage.evaluation.robustness import resolve_preparations, run_robustness

    report = run_robustness(load_predictor(), load_samples(data_dir / "rsna-raw13"),
                            resolve_preparations(["border_white", "border_black"]))
    shifts = {row["preparation"]: row["mean_shift"] for row in report["rows"]}
    assert abs(shifts["border_white"]) <= 3.0 and abs(shifts["border_black"]) <= 3.0, shifts


def test_a_white_frame_around_a_grey_film_keeps_its_bone_age_without_real_data():
    """The case that moved a real film most: a hand on a grey background (not black), framed in
    white. The frame used to become the 99th percentile of the canonical stretch and darken the
    whole hand; the bundled model's unframe step continues the film over it instead."""
    from boneage.data.synthetic import make_radiograph
    from boneage.transforms import functional as F

    p = load_predictor()
    moved = []
    for i, age in enumerate([60, 120, 180]):
        image = make_radiograph(age, "MF"[i % 2], size=(600, 480), seed=i, nuisance=False).image
        grey = F.window(image, -0.6, 1.0)                       # black background -> 0.375 grey
        framed = F.add_border(grey, 0.04, 1.0)
        a, b = p.predict_batch([grey, framed], ["MF"[i % 2]] * 2)
        moved.append(b.bone_age_months - a.bone_age_months)
    assert np.mean(np.abs(moved)) <= 1.0, moved
