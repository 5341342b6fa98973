"""The Python API gives what the CLI prints."""

import json

import numpy as np
import pytest

from boneage import api
from boneage.errors import InputError
from boneage.io import read_image, write_dicom
from boneage.inference.loader import load_predictor


def test_predict_accepts_paths_images_and_arrays_alike(tiny_model, synthetic_folder, tmp_path):
    path = sorted((synthetic_folder / "images").glob("*.png"))[0]
    by_path = api.predict(path, "M", model=tiny_model)
    by_image = api.predict(read_image(path), "male", model=tiny_model)
    by_array = api.predict(read_image(path).pixels, "M", model=tiny_model)
    assert by_path.bone_age_months == pytest.approx(by_image.bone_age_months) == pytest.approx(
        by_array.bone_age_months)
    dcm = write_dicom(tmp_path / "h.dcm", read_image(path).pixels, sex="M")
    assert api.predict(dcm, model=tiny_model).bone_age_months == pytest.approx(by_path.bone_age_months, abs=0.05)
    with pytest.raises(InputError, match="sex is unknown: the file has no sex tag and none was given; "
                                         "pass sex='M' or 'F'"):
        api.predict(path, model=tiny_model)
    batch = api.predict_batch([path, dcm], ["M", None], model=tiny_model)
    assert batch[0].bone_age_months == pytest.approx(by_path.bone_age_months, abs=1e-3)
    assert batch[1].bone_age_months == pytest.approx(by_path.bone_age_months, abs=0.05)  # DICOM: same pixels


def test_evaluate_matches_the_cli(cli, tiny_model, synthetic_folder, tmp_path):
    summary = api.evaluate(synthetic_folder, model=tiny_model, limit=20)
    code, out, _ = cli("evaluate", synthetic_folder, "--model", tiny_model, "--limit", 20, "--json", "--quiet")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["mae"] == pytest.approx(summary["mae"])
    written = api.evaluate(synthetic_folder, model=tiny_model, limit=20, out=tmp_path / "r")
    assert written["mae"] == pytest.approx(summary["mae"]) and written["n"] == 20
    for name in ("predictions.csv", "summary.json", "pred_vs_true.png", "bland_altman.png", "error_by_age_bin.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    with pytest.raises(InputError, match="limit must be >= 1, got 0"):
        api.evaluate(synthetic_folder, model=tiny_model, limit=0)


def test_explain_returns_a_map_on_the_radiograph_as_given(tiny_model, synthetic_folder, tmp_path):
    from boneage.io import read_image

    path = sorted((synthetic_folder / "images").glob("*.png"))[0]
    pred, heat, background = api.explain(path, "F", model=tiny_model, out=tmp_path / "h.png")
    assert heat.shape == background.shape == read_image(path).pixels.shape
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert pred.bone_age_months == pytest.approx(api.predict(path, "F", model=tiny_model).bone_age_months)


def test_the_gate_preprocesses_once_and_the_bone_age_is_the_predictors_own(synthetic_folder):
    """api.predict hands the gate's preprocessed image to the prediction: the bone age must be
    exactly what the predictor gives the pixels on its own, as given and after a correction."""
    from boneage.inference.predictor import default_model_path
    from boneage.inference.quality import orient

    predictor = load_predictor(default_model_path("onnx"))
    pixels = read_image(sorted((synthetic_folder / "images").glob("*.png"))[0]).pixels
    assessed, verdict, pre = predictor.screen_keeping_preprocessed(pixels, force=True)
    assert pre is not None and np.array_equal(pre, predictor.preprocess(pixels))
    alone = predictor.predict(pixels, "F").bone_age_months
    assert api.predict(pixels, "F", model=predictor, force=True).bone_age_months == alone
    # Turned by 180°: if the gate corrects it, the prediction preprocesses the corrected image.
    turned = orient(pixels, 2)
    corrected, verdict, pre = predictor.screen_keeping_preprocessed(turned, force=True)
    assert (pre is None) == bool(verdict.corrections)
    via_api = api.predict(turned, "F", model=predictor, force=True).bone_age_months
    assert via_api == predictor.predict(corrected, "F").bone_age_months
