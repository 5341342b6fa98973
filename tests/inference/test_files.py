"""Many images: input expansion, shards, the sex CSV, the results CSV and its resume."""

import csv
import os

import numpy as np
import pytest

from boneage import api
from boneage.errors import InputError, QualityRefusal
from boneage.inference.files import (
    RESULT_COLUMNS, FileResult, ResultsCSV, check_sex_ids, expand_inputs, image_id,
    parse_shard, prefetch_images, read_sex_csv, take_shard,
)
from boneage.io import write_dicom
from boneage.sex import Sex


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_are_walked_for_images_and_globs_expanded_sorted_once(tmp_path):
    for name in ("b.png", "a.JPG", "sub/c.tif", "sub/deeper/d.dcm", "notes.txt", ".hidden.png",
                 ".git/e.png", "sub/._f.png"):
        _touch(tmp_path / name)
    dicom = write_dicom(tmp_path / "sub" / "1.2.840.10008", np.zeros((16, 16), np.float32))
    found = expand_inputs([tmp_path])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == sorted(names) == ["a.JPG", "b.png", "sub/1.2.840.10008", "sub/c.tif", "sub/deeper/d.dcm"]
    assert dicom in found and image_id(dicom) == "1.2.840.10008" and image_id(tmp_path / "a.JPG") == "a"
    # A pattern (with ** for any depth), the folder and a file named twice: each image once.
    again = expand_inputs([str(tmp_path / "**" / "*.dcm"), tmp_path, tmp_path / "b.png",
                           os.path.join(str(tmp_path), ".", "b.png")])
    assert again == found
    assert expand_inputs([str(tmp_path / "*.png")]) == [tmp_path / "b.png"]
    # A file named directly is taken whatever it is; it becomes its own error row later.
    assert expand_inputs([tmp_path / "notes.txt", tmp_path / "missing.png"]) == [
        tmp_path / "missing.png", tmp_path / "notes.txt"]


def test_empty_folders_and_patterns_matching_nothing_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder holds no image files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match=r"pattern '.*\*\.png' matches no image file"):
        expand_inputs([str(tmp_path / "empty" / "*.png")])


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1/2/3", "", "-1/3", "1.5/3"])
def test_bad_shards_name_the_value(text):
    with pytest.raises(InputError, match=r"--shard must be K/N with 1 <= K <= N .*got " + repr(text)):
        parse_shard(text)


def test_shards_partition_the_sorted_inputs_exactly():
    paths = [f"{i:03d}.png" for i in range(23)]
    for n in (1, 2, 3, 7, 23, 30):
        shards = [take_shard(paths, *parse_shard(f"{k}/{n}")) for k in range(1, n + 1)]
        assert sorted(p for s in shards for p in s) == paths
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert take_shard(paths, 2, 3)[:3] == ["001.png", "004.png", "007.png"]


def test_sex_csv_columns_values_and_errors(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("ID,Sex\n1377,M\n1378, f \n", encoding="utf-8-sig")
    assert read_sex_csv(f) == {"1377": Sex.MALE, "1378": Sex.FEMALE}
    f.write_text("path,male,boneage\nimages/a.png,1\nimages/b.dcm,False\nc,true\n")
    assert read_sex_csv(f) == {"a": Sex.MALE, "b": Sex.FEMALE, "c": Sex.MALE}
    cases = [
        ("name,sex\na,M\n", "has no id column (its header has 'name', 'sex'; allowed: id, image, path)"),
        ("id,gender\na,M\n", "has no sex column"),
        ("id,sex\na,X\n", "line 2: sex 'X' for id 'a' is not M or F"),
        ("id,male\na,M\nb,maybe\n", "line 3: male 'maybe' for id 'b' is not true/false or 1/0"),
        ("id,sex\na,M\n,F\n", "line 3: empty id"),
        ("id,sex\na,M\na,F\n", "line 3: id 'a' is given both sexes"),
    ]
    for text, message in cases:
        f.write_text(text)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            read_sex_csv(f)
        assert str(f) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="sex CSV not found"):
        read_sex_csv(tmp_path / "none.csv")


def test_sex_csv_ids_must_match_inputs():
    check_sex_ids({"a": Sex.MALE}, ["x/a.png", "b.png"])
    with pytest.raises(InputError, match=r"2 id\(s\) in the sex CSV match no input image: 'c', 'd'; "
                                         "ids must be the image file names"):
        check_sex_ids({"a": Sex.MALE, "d": Sex.MALE, "c": Sex.FEMALE}, ["a.png"], "s.csv")


def test_prefetch_keeps_order_and_hands_errors_back(tmp_path):
    from boneage.data.synthetic import write_example_radiograph

    paths = [str(write_example_radiograph(tmp_path / f"{i}.png", size=64, seed=i)) for i in range(5)]
    paths.insert(2, str(_touch(tmp_path / "bad.png", b"\x89PNG\r\n\x1a\nbroken")))
    paths.append(str(tmp_path / "missing.png"))
    got = list(prefetch_images(paths, workers=2, window=3))
    assert [p for p, _ in got] == paths
    assert isinstance(got[2][1], InputError) and "corrupt or truncated" in str(got[2][1])
    assert "file not found" in str(got[-1][1])
    assert all(img.pixels.shape == (64, 64) for _, img in got[:2] + got[3:6])
    with pytest.raises(InputError, match="workers must be >= 1, got 0"):
        next(prefetch_images(paths, workers=0))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_appends_resumes_and_cuts_a_half_written_line(tmp_path):
    out = tmp_path / "r" / "results.csv"
    table = ResultsCSV(out)
    with table:
        table.write(FileResult("a.png", error=InputError("file not found", "a.png")).row())
        table.write(FileResult("b.png", error=QualityRefusal("DICOM Modality is CT", "b.png")).row())
    rows = _rows(out)
    assert tuple(rows[0]) == RESULT_COLUMNS and [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["error"] == "file not found" and rows[1]["quality"] == "refused"
    assert rows[1]["quality_reason"] == "DICOM Modality is CT" and rows[1]["error"] == ""

    with open(out, "a") as f:
        f.write("c,c.png,M,argu")  # a run killed mid-row
    table = ResultsCSV(out)
    assert table.repaired and table.previous("a.png")["error"] == "file not found"
    assert table.previous(os.path.abspath("b.png")) is not None and table.previous("c.png") is None
    with table:
        table.write(FileResult("c.png", error=InputError("x\ny", "elsewhere")).row())
    text = out.read_text()
    assert text.count("id,path,") == 1 and text.endswith("\n") and "argu" not in text
    assert [r["id"] for r in _rows(out)] == ["a", "b", "c"] and _rows(out)[2]["error"] == "elsewhere: x y"


def test_results_csv_refuses_a_file_it_did_not_write(tmp_path):
    other = tmp_path / "labels.csv"
    other.write_text("id,boneage,male\n1,12,True\n")
    with pytest.raises(InputError, match="exists with other columns than a boneage results CSV"):
        ResultsCSV(other)
    one_line = tmp_path / "notes.csv"
    one_line.write_text("something else")  # no newline: not to be cut as if half-written
    with pytest.raises(InputError, match="exists with other columns"):
        ResultsCSV(one_line)
    assert one_line.read_text() == "something else" and other.read_text().startswith("id,boneage")
    half_header = tmp_path / "h.csv"
    half_header.write_text("id,path,se")
    with ResultsCSV(half_header):
        pass
    assert half_header.read_text() == ",".join(RESULT_COLUMNS) + "\n"


def test_predict_batch_runs_the_gate_and_equals_predict(tiny_model, tmp_path):
    import pydicom

    from boneage.data.synthetic import write_example_radiograph
    from boneage.io import read_image

    png = write_example_radiograph(tmp_path / "a.png", size=96, seed=1)
    ct = write_dicom(tmp_path / "ct.dcm", read_image(png).pixels, sex="F")
    ds = pydicom.dcmread(ct)
    ds.Modality = "CT"
    ds.save_as(ct)
    with pytest.raises(QualityRefusal, match="ct.dcm: not assessed: DICOM Modality is CT"):
        api.predict_batch([png, ct], ["M", None], model=tiny_model)
    batch = api.predict_batch([png, ct], ["M", None], model=tiny_model, force=True, age_months=[100, None])
    alone = [api.predict(png, "M", model=tiny_model, force=True, age_months=100),
             api.predict(ct, model=tiny_model, force=True)]
    for b, a in zip(batch, alone):
        assert b.bone_age_months == pytest.approx(a.bone_age_months, abs=1e-3)
        assert b.quality == a.quality and b.sex == a.sex
    assert batch[1].quality.forced and batch[1].clinical is None
    assert batch[0].clinical.z_score == pytest.approx(alone[0].clinical.z_score, abs=1e-4)
    with pytest.raises(InputError, match="got 2 images but 1 ages"):
        api.predict_batch([png, ct], ["M", "F"], model=tiny_model, age_months=[1])


def test_predict_files_says_where_each_sex_came_from(tiny_model, tmp_path):
    from boneage.data.synthetic import write_example_radiograph
    from boneage.io import read_image

    a = write_example_radiograph(tmp_path / "a.png", size=96, seed=1)
    b = write_example_radiograph(tmp_path / "b.png", size=96, seed=2)
    d = write_dicom(tmp_path / "d.dcm", read_image(a).pixels, sex="M")
    records = list(api.predict_files([a, b, d], sex_from={"a": "F"}, model=tiny_model))
    assert [(r.sex_source, r.sex) for r in records] == [("csv", Sex.FEMALE), ("none", None), ("dicom", Sex.MALE)]
    assert records[1].failed and "b.png: sex is unknown" in str(records[1].error)
    assert records[0].prediction.bone_age_months == pytest.approx(
        api.predict(a, "F", model=tiny_model).bone_age_months)
    forced = list(api.predict_files([a, d], "F", sex_from={"a": "M"}, model=tiny_model))
    assert [(r.sex_source, str(r.sex)) for r in forced] == [("argument", "F"), ("argument", "F")]
    with pytest.raises(InputError, match=r"1 id\(s\) in the sex CSV match no input image: 'zz'"):
        (tmp_path / "s.csv").write_text("id,sex\nzz,M\n")
        api.predict_files([a], sex_from=tmp_path / "s.csv", model=tiny_model)
