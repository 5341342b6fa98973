"""The command line, end to end: outputs, JSON contracts and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from boneage.io import read_image, write_dicom
from rounding import unrounded






def test_example_then_predict_json(cli, tmp_path, tiny_model):
    img = tmp_path / "hand.png"
    code, out, _ = cli("example", img)
    assert code == 0 and "SYNTHETIC" in out and img.stat().st_size > 0
    copy = tmp_path / "hand2.png"
    copy.write_bytes(img.read_bytes())
    # the second image follows the options; the same file named twice is assessed once
    code, out, err = cli("predict", img, "--sex", "F", "--model", tiny_model, "--json", copy, img)
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 2 and rows[0]["image"] == str(img) and rows[0]["sex"] == "F"
    from boneage import api  # the CLI prints the API's bone age, to 0.01 months

    assert rows[0]["bone_age_months"] == round(api.predict(img, "F", model=tiny_model, force=True).bone_age_months, 2)
    assert rows[1]["image"] == str(copy) and rows[0]["bone_age_months"] == rows[1]["bone_age_months"]
    code, out, _ = cli("predict", img, "--sex", "M", "--model", tiny_model)
    assert code == 0 and "bone age" in out and "months" in out


def test_sex_comes_from_dicom_tags_or_is_a_clear_error(cli, tmp_path, tiny_model):
    pixels = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    dcm = write_dicom(tmp_path / "m.dcm", pixels, photometric="MONOCHROME1", sex="M")
    code, out, _ = cli("predict", dcm, "--model", tiny_model, "--json")
    assert code == 0 and json.loads(out)["sex"] == "M"
    nosex = write_dicom(tmp_path / "n.dcm", pixels)
    code, out, err = cli("predict", nosex, "--model", tiny_model)
    assert code == 2 and out == ""
    assert err == (f"boneage: error: {nosex}: sex is unknown: the file has no sex tag and none was given; "
                   "give --sex M|F, or --sex-from CSV (columns id,sex) for per-image sexes\n")
    code, _, err = cli("predict", nosex, "--model", tiny_model, "--sex", "X")
    assert code == 2 and "sex must be M or F, got 'X'" in err


def test_predict_with_age_gives_the_clinical_reading(cli, tmp_path, tiny_model):
    from boneage.data.synthetic import write_example_radiograph

    img = write_example_radiograph(tmp_path / "hand.png", size=64)
    code, out, err = cli("predict", img, "--sex", "F", "--model", tiny_model, "--json", "--age-months", "60")
    assert code == 0, err
    row = json.loads(out)
    reading = row["clinical"]
    assert unrounded(row) == []  # months, years and the z-score to 0.01
    assert reading["chronological_age_months"] == 60.0 and reading["age_source"] == "age given"
    assert reading["bone_age_months"] == row["bone_age_months"]
    assert reading["difference_months"] == pytest.approx(row["bone_age_months"] - 60, abs=0.006)
    assert reading["difference_years"] == pytest.approx(reading["difference_months"] / 12, abs=0.006)
    assert reading["reference_sd_months"] == pytest.approx(11.65)  # girls at 60 months
    assert reading["z_score"] == pytest.approx((row["bone_age_months"] - 60) / 11.65, abs=0.006)
    expected = "within normal limits" if abs(reading["z_score"]) <= 2 else (
        "advanced" if reading["z_score"] > 0 else "delayed")
    assert reading["impression"] == expected

    code, out, err = cli("predict", img, "--sex", "F", "--model", tiny_model,
                         "--birth-date", "2010-01-01", "--study-date", "20260101")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 5
    assert lines[1] == "  chronological age: 192.0 months (16.0 years), from birth and study dates given"
    assert lines[2].startswith("  difference (bone - chronological): ")
    # 2010-01-01 .. 2026-01-01 is 5844 days, exactly 192 mean months: girls' last SD, 7.31.
    z = (row["bone_age_months"] - 192) / 7.31  # from the bone age to 0.01: z to within 0.002
    assert lines[3].startswith("  z-score: ") and lines[3].endswith(" (SD 7.31 months, Greulich–Pyle (Brush Foundation))")
    assert float(lines[3].split()[1]) == pytest.approx(z, abs=0.006)
    assert lines[4].startswith("  impression: ")

    code, out, _ = cli("predict", img, "--sex", "F", "--model", tiny_model, "--age-months", "200")
    assert code == 0
    assert ("  z-score: none (chronological age 200.0 months is above the Greulich–Pyle "
            "(Brush Foundation) reference range for girls (3–192 months))") in out.splitlines()
    assert "  impression: no impression (no z-score); bone age " in out


@pytest.mark.parametrize("content,phrase", [(b"", "cannot decode"), (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot decode")])
def test_unreadable_image_one_line_no_traceback(cli, tmp_path, tiny_model, content, phrase):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    code, out, err = cli("predict", bad, "--sex", "M", "--model", tiny_model)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "broken.png" in err and phrase in err
    assert "Traceback" not in err


def test_bad_dicom_volume_and_missing_pixels(cli, tmp_path, tiny_model):
    import pydicom
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientSex = "F"
    p = tmp_path / "empty.dcm"
    ds.save_as(p, enforce_file_format=True)
    code, _, err = cli("predict", p, "--model", tiny_model)
    assert code == 2 and "empty.dcm" in err and "no pixel data" in err
    ds.Rows, ds.Columns, ds.NumberOfFrames = 32, 32, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.zeros((3, 32, 32), np.uint16).tobytes()
    v = tmp_path / "volume.dcm"
    ds.save_as(v, enforce_file_format=True)
    code, _, err = cli("predict", v, "--model", tiny_model)
    assert code == 2 and "volume.dcm" in err and "3-D volume of 3 frames" in err


def test_absurdly_small_image(cli, tmp_path, tiny_model):
    import cv2

    p = tmp_path / "tiny.png"
    cv2.imwrite(str(p), np.zeros((4, 4), np.uint8))
    code, _, err = cli("predict", p, "--sex", "M", "--model", tiny_model)
    assert code == 2 and "tiny.png" in err and "too small" in err


def test_evaluate_json_last_line_and_outputs(cli, tmp_path, synthetic_folder, tiny_model):
    out_dir = tmp_path / "eval"
    code, out, err = cli("evaluate", synthetic_folder, "--model", tiny_model, "--json",
                         "--quiet", "--out", out_dir)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 60
    # The summary is the predictions' own: recomputed from predictions.csv (0.01-month rows).
    import csv

    with open(out_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60
    error = np.array([float(r["predicted"]) - float(r["boneage"]) for r in rows])
    male = np.array([r["male"] == "True" for r in rows])
    assert 0 < male.sum() < 60
    assert summary["mae"] == pytest.approx(np.abs(error).mean(), abs=0.005)
    assert summary["rmse"] == pytest.approx(np.sqrt((error ** 2).mean()), abs=0.01)
    assert summary["mae_male"] == pytest.approx(np.abs(error[male]).mean(), abs=0.005)
    assert summary["mae_female"] == pytest.approx(np.abs(error[~male]).mean(), abs=0.005)
    assert json.loads((out_dir / "summary.json").read_text())["mae"] == summary["mae"]
    for name in ("pred_vs_true.png", "bland_altman.png"):
        assert (out_dir / name).stat().st_size > 0


def test_evaluate_bad_folder_errors_and_leaves_nothing(cli, tmp_path, tiny_model):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "labels.csv").write_text("id,boneage\n1,12\n")
    out_dir = tmp_path / "eval"
    code, _, err = cli("evaluate", tmp_path / "d", "--model", tiny_model, "--out", out_dir)
    assert code == 2 and "labels.csv: missing sex column" in err and not out_dir.exists()
    (tmp_path / "d" / "labels.csv").write_text("id,boneage,male\n1,12,True\n")
    code, _, err = cli("evaluate", tmp_path / "d", "--model", tiny_model, "--out", out_dir)
    assert code == 2 and "1 id(s) have no image" in err and not out_dir.exists()


def test_train_cli_writes_model_and_bad_config_is_one_line(cli, tmp_path, synthetic_folder):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"name: cli\ndata: {{root: {synthetic_folder}, val_fraction: 0.2}}\n"
                   "preprocess: [{name: resize, size: 32}]\n"
                   "model: {name: small_cnn, options: {width: 4, stages: 2}}\n"
                   "train: {epochs: 1, batch_size: 16, device: cpu}\n")
    out = tmp_path / "run"
    code, stdout, err = cli("train", cfg, "--out", out, "--quiet", "train.seed=3")  # overrides after options too
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and (out / "training_curves.png").is_file()
    code, stdout, _ = cli("info", out / "model.safetensors")
    assert code == 0 and "model        cli (small_cnn, regression)" in stdout and "validation   MAE" in stdout
    code, stdout, _ = cli("info", out / "model.safetensors", "--json")
    info = json.loads(stdout)
    assert info["recipe"]["train"]["seed"] == 3 and info["recipe"]["target"]["mean"] > 0
    code, stdout, _ = cli("compare", out)
    row = stdout.strip().splitlines()[-1].split("|")
    assert code == 0 and row[1].strip() == "run" and row[2].strip() == "small_cnn"
    assert float(row[3]) == pytest.approx(info["info"]["val_mae"], abs=0.01)
    code, stdout, _ = cli("compare", out, out)  # a run against itself: zero difference
    assert [line.split("|")[-2].strip() for line in stdout.strip().splitlines()[-2:]] == [
        "–", "+0.00 (+0.00 to +0.00)"]
    code, _, err = cli("train", cfg, "model.name=resnet81", "--out", tmp_path / "x")
    assert code == 2 and "unknown model 'resnet81'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_models_lists_registry(cli):
    code, out, _ = cli("models")
    assert code == 0 and "resnet18_cbam" in out.split()
    kinds, current = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            kinds[current].append(line.strip())
        else:
            current = line.split()[0]
            kinds[current] = []
    assert list(kinds) == ["regression", "segmentation", "enhancement"]
    assert "efficientnet_lite0" in kinds["regression"] and "unet" not in kinds["regression"]
    assert kinds["segmentation"] == ["fc_densenet", "unet"]
    assert kinds["enhancement"] == ["pair_discriminator", "pix2pix_generator"]


def test_console_entry_point_runs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "boneage", "predict", str(tmp_path / "none.png"), "--sex", "M"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "none.png" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("argv, message", [
    (["complexity", "--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
    (["train-unet", "u.safetensors", "--images", "-1"], "argument --images: must be >= 1, got -1"),
    (["evaluate", "x", "--limit", "abc"], "argument --limit: must be a whole number, got 'abc'"),
    (["predikt", "x"], "invalid choice: 'predikt'"),
    (["predict", "x.png", "--sex", "M", "--bogus"], "unrecognized arguments: --bogus"),
    (["predict", "x.png", "--age-months", "250"],
     "argument --age-months: age 250 months is outside 0–240 months (0–20 years)"),
    (["predict", "x.png", "--birth-date", "1.2.2020"],
     "argument --birth-date: date '1.2.2020' is in an unknown format; allowed: YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"),
    (["predict", "x.png", "--study-date", "2020-02-30"],
     "argument --study-date: date '2020-02-30' is not a calendar date; allowed: YYYY-MM-DD (ISO) or YYYYMMDD (DICOM)"),
    (["predict", "x.png", "--birth-date", "2020-05-01", "--study-date", "2019-01-01"],
     "study date 2019-01-01 is before birth date 2020-05-01; the study date must be on or after the birth date"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(cli, argv, message):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def _evaluation_folder(path, rows):
    """A `boneage evaluate --out` folder holding just predictions.csv and summary.json."""
    path.mkdir()
    lines = ["id,male,boneage,predicted"] + [f"{i},{m},{t},{p}" for i, m, t, p in rows]
    (path / "predictions.csv").write_text("\n".join(lines) + "\n")
    err = [abs(p - t) for _, _, t, p in rows]
    (path / "summary.json").write_text(json.dumps({"mae": sum(err) / len(err), "model_name": path.name}))
    return path


def test_compare_two_evaluations_by_age_band(cli, tmp_path):
    truth = [("a", "True", 30.0), ("b", "False", 70.0), ("c", "True", 200.0), ("d", "False", 190.0)]
    before = _evaluation_folder(tmp_path / "before", [(i, m, t, t + 10) for i, m, t in truth])
    after = _evaluation_folder(tmp_path / "after", [(i, m, t, t - 2) for i, m, t in truth])
    plot = tmp_path / "bands.png"
    code, out, err = cli("compare", before, after, "--bands", plot)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[2].split("|")[3].strip() == "10.00" and lines[3].split("|")[3].strip() == "2.00"
    assert lines[3].split("|")[-2].strip().startswith("-8.00")   # paired: 2 - 10 on the same four
    bands = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
             for line in lines if line.startswith("| F ") or line.startswith("| M ")}
    assert bands["F", "5-10"] == ["1", "10.00", "+10.00", "2.00", "-2.00"]
    assert bands["M", "15+"] == ["1", "10.00", "+10.00", "2.00", "-2.00"]
    assert bands["M", "5-10"] == ["0", "–", "–", "–", "–"]
    assert read_image(plot).pixels.shape[0] > 300


def test_compare_names_two_evaluations_of_one_name_by_their_parents(cli, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    truth = [("a", "True", 30.0), ("b", "False", 70.0)]
    old = _evaluation_folder(tmp_path / "old" / "heldback", [(i, m, t, t + 4) for i, m, t in truth])
    new = _evaluation_folder(tmp_path / "new" / "heldback", [(i, m, t, t - 1) for i, m, t in truth])
    code, out, err = cli("compare", old, new, "--bands", tmp_path / "bands.png")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("| sex |"))
    assert "old/heldback: MAE" in header and "new/heldback: MAE" in header
    female_5_10 = next(line for line in out.splitlines() if line.startswith("| F | 5-10 |"))
    assert [c.strip() for c in female_5_10.split("|")[3:-1]] == ["1", "4.00", "+4.00", "1.00", "-1.00"]


def _undecodable_files(folder):
    """Files whose decoders once printed lines of their own (libpng, OpenCV, pydicom)."""
    import struct
    import zlib

    import cv2

    gray = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    png = cv2.imencode(".png", gray)[1].tobytes()
    at = png.find(b"IDAT")
    n = struct.unpack(">I", png[at - 4:at])[0]
    junk = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    tif = cv2.imencode(".tif", gray)[1].tobytes()
    files = {"truncated.png": png[: len(png) // 2],
             "garbage.png": png[:at + 4] + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk)) + png[at + 8 + n:],
             "truncated.tif": tif[: len(tif) // 2]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def test_every_decoder_failure_and_unusable_model_is_one_stderr_line(tmp_path, tiny_model, capfd):
    """Checked at the file-descriptor level: native libraries write to fd 2 from C."""
    from boneage.cli.main import main
    from boneage.config import Recipe
    from boneage.inference.torch_model import save_model_file
    from boneage.inference.torch_model import build_model

    untrained = Recipe.from_dict({"name": "u", "preprocess": [{"name": "resize", "size": 32}],
                                  "model": {"name": "small_cnn", "options": {"width": 4, "stages": 2}}})
    model = save_model_file(tmp_path / "untrained.safetensors", build_model(untrained), untrained)
    ok = tmp_path / "ok.png"
    assert main(["example", str(ok), "--size", "64"]) == 0
    capfd.readouterr()
    runs = [([str(p), "--model", str(tiny_model)], p.name) for p in _undecodable_files(tmp_path)]
    runs.append(([str(ok), "--model", str(model)], "untrained.safetensors"))
    for argv, name in runs:
        assert main(["predict", *argv, "--sex", "M"]) == 2
        out, err = capfd.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("boneage: error: ") and name in err, err
