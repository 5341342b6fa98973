"""``boneage predict`` on many images: folders, globs, the results CSV, resume, sex CSV, shards."""

import csv
import json

import pytest

from boneage.data.synthetic import write_example_radiograph
from boneage.inference.files import RESULT_COLUMNS


@pytest.fixture
def scans(tmp_path):
    """Four small synthetic radiographs, one in a sub-folder, and a note that is no image."""
    folder = tmp_path / "scans"
    for i, name in enumerate(["h1.png", "h2.png", "sub/h3.png", "h4.png"]):
        write_example_radiograph(folder / name, age_months=60 + 30 * i, size=128, seed=i)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _messages(err):
    """stderr without the progress bar."""
    return [line for line in err.splitlines() if line.startswith("boneage:")]


def test_folder_and_glob_give_every_image_once_in_sorted_order(cli, scans, tiny_model):
    code, out, err = cli("predict", scans, str(scans / "**" / "*.png"), scans / "h1.png",
                         "--sex", "F", "--model", tiny_model, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == [str(scans / n) for n in ("h1.png", "h2.png", "h4.png", "sub/h3.png")]
    code, out, _ = cli("predict", str(scans / "h[12].png"), "--sex", "F", "--model", tiny_model)
    assert code == 0 and [line.split(":")[0] for line in out.splitlines()] == [
        str(scans / "h1.png"), str(scans / "h2.png")]
    code, out, err = cli("predict", str(scans / "*.jpg"), "--sex", "F", "--model", tiny_model)
    assert code == 2 and out == "" and "matches no image file" in err and len(err.splitlines()) == 1


def test_csv_rows_a_bad_file_in_the_middle_and_resume(cli, scans, tiny_model, tmp_path):
    (scans / "h2b.png").write_bytes(b"\x89PNG\r\n\x1a\ncut short")  # sorts between h2 and h4
    out = tmp_path / "results.csv"
    code, stdout, err = cli("predict", scans, "--sex", "M", "--age-months", "100", "--model", tiny_model,
                            "--out", out)
    assert code == 2
    assert _messages(err) == [f"boneage: error: {scans / 'h2b.png'}: cannot decode image: PNG data is "
                              "corrupt or truncated (it ends before its IEND chunk)"]
    assert "wrote 5 row(s)" in stdout and "(4 assessed)" in stdout
    rows = _rows(out)
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [r["id"] for r in rows] == ["h1", "h2", "h2b", "h4", "h3"]
    bad = rows[2]
    assert bad["error"] == ("cannot decode image: PNG data is corrupt or truncated (it ends before its IEND "
                            "chunk)") and bad["bone_age_months"] == ""
    for row in rows[:2] + rows[3:]:
        assert row["error"] == "" and row["quality"] == "accepted" and row["sex"] == "M"
        assert row["sex_source"] == "argument" and 0 < float(row["bone_age_months"]) < 300
        assert row["chronological_age_months"] == "100.00" and row["age_source"] == "age given"
        assert row["impression"] in ("within normal limits", "advanced", "delayed") and row["z_score"]
        assert row["interval_level"] == "" or 0 < float(row["interval_level"]) < 1
    code, single, _ = cli("predict", scans / "h1.png", "--sex", "M", "--age-months", "100",
                          "--model", tiny_model, "--json")
    assert float(rows[0]["bone_age_months"]) == pytest.approx(json.loads(single)["bone_age_months"], abs=0.005)

    # Killed mid-row, then one more image: only the new one and the cut-off row are assessed.
    text = out.read_text()
    out.write_text(text[:-25])
    write_example_radiograph(scans / "h5.png", size=128, seed=5)
    code, stdout, err = cli("predict", scans, "--sex", "M", "--age-months", "100", "--model", tiny_model,
                            "--out", out, "--quiet")
    assert code == 2  # the bad file, retried, is still bad
    assert "resuming" in err and "cut off a half-written last line" in err and "retrying 1 " in err
    assert "wrote 3 row(s)" in stdout
    again = _rows(out)
    # Appended in sorted order: h2b (retried), h5 (new), sub/h3 (its row was cut off).
    assert [r["id"] for r in again] == ["h1", "h2", "h4", "h2b", "h5", "h3"]
    assert again[:3] == rows[:2] + rows[3:4] and again[3] == rows[2] and again[5] == rows[4]
    assert out.read_text().count("id,path,") == 1

    code, stdout, err = cli("predict", scans, "--sex", "M", "--model", tiny_model, "--out", out, "--quiet")
    assert code == 2 and "wrote 1 row(s)" in stdout and len(_rows(out)) == 6


def test_a_rerun_retries_rows_that_ended_in_an_error(cli, scans, tiny_model, tmp_path):
    """The first run had no sex for any image; the rerun with --sex-from must assess them all
    instead of finding every image "already there"."""
    out = tmp_path / "results.csv"
    code, stdout, _ = cli("predict", scans, "--model", tiny_model, "--out", out, "--quiet")
    assert code == 2 and "(0 assessed)" in stdout
    assert [bool(r["error"]) for r in _rows(out)] == [True] * 4
    sexes = tmp_path / "labels.csv"
    sexes.write_text("id,sex\nh1,M\nh2,F\nh3,M\nh4,F\n")
    code, stdout, err = cli("predict", scans, "--sex-from", sexes, "--model", tiny_model, "--out", out, "--quiet")
    assert code == 0, err
    assert "0 image(s) already there; retrying 4 that ended in an error" in err
    assert "wrote 4 row(s)" in stdout and "(4 assessed)" in stdout
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == ["h1", "h2", "h3", "h4"]
    assert all(r["error"] == "" and r["sex_source"] == "csv" and r["bone_age_months"] for r in rows)


def test_sex_from_csv_with_argument_and_dicom_precedence(cli, scans, tiny_model, tmp_path):
    import numpy as np

    from boneage.io import write_dicom

    write_dicom(scans / "d1.dcm", np.full((64, 64), 0.5, np.float32), sex="F")
    sexes = tmp_path / "sexes.csv"
    sexes.write_text("image,male\nh1.png,1\nh2.png,0\nsub/h3.png,true\n")
    out = tmp_path / "r.csv"
    code, _, err = cli("predict", scans, "--sex-from", sexes, "--model", tiny_model, "--out", out, "--quiet")
    assert code == 2, err  # h4 has no sex anywhere
    got = {r["id"]: (r["sex"], r["sex_source"], r["error"]) for r in _rows(out)}
    assert got["h1"] == ("M", "csv", "") and got["h2"] == ("F", "csv", "") and got["h3"] == ("M", "csv", "")
    assert got["d1"] == ("F", "dicom", "") and got["h4"][:2] == ("", "none") and "sex is unknown" in got["h4"][2]
    assert got["h4"][2].endswith("give --sex M|F, or --sex-from CSV (columns id,sex) for per-image sexes")
    code, out_text, _ = cli("predict", scans / "h1.png", scans / "d1.dcm", "--sex", "F",
                            "--sex-from", sexes, "--model", tiny_model, "--json")
    assert code == 2  # h2, h3 in the CSV are not inputs here
    sexes.write_text("id,sex\nh1,M\nh9,F\n")
    code, out_text, err = cli("predict", scans, "--sex-from", sexes, "--model", tiny_model, "--out", tmp_path / "x.csv")
    assert code == 2 and out_text == "" and not (tmp_path / "x.csv").exists()
    assert err == f"boneage: error: {sexes}: 1 id(s) in the sex CSV match no input image: 'h9'; " \
                  "ids must be the image file names without extension\n"
    sexes.write_text("id,sex\nh1,W\n")
    code, _, err = cli("predict", scans, "--sex-from", sexes, "--model", tiny_model)
    assert code == 2 and "line 2: sex 'W' for id 'h1' is not M or F" in err and len(err.splitlines()) == 1


def test_shards_cover_every_image_once_and_concatenate(cli, scans, tiny_model, tmp_path):
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}.csv"
        code, _, err = cli("predict", scans, "--sex", "F", "--model", tiny_model, "--out", out,
                           "--shard", f"{k}/3", "--quiet")
        assert code == 0, err
        parts.append(_rows(out))
    assert [len(p) for p in parts] == [2, 1, 1]
    whole = tmp_path / "whole.csv"
    assert cli("predict", scans, "--sex", "F", "--model", tiny_model, "--out", whole, "--quiet")[0] == 0
    by_path = sorted((r for p in parts for r in p), key=lambda r: r["path"])
    assert by_path == sorted(_rows(whole), key=lambda r: r["path"])
    for bad in ("0/3", "4/3", "x"):
        code, out, err = cli("predict", scans, "--sex", "F", "--model", tiny_model, "--shard", bad)
        assert code == 2 and out == "" and err == (
            f"boneage: error: --shard must be K/N with 1 <= K <= N (e.g. 2/8), got {bad!r}\n")


def test_a_refused_file_exits_3_and_force_assesses_it(cli, scans, tiny_model, tmp_path):
    import numpy as np
    import pydicom

    from boneage.io import write_dicom

    (tmp_path / "ct").mkdir()
    ct = write_dicom(tmp_path / "ct" / "slice", np.full((64, 64), 0.3, np.float32), sex="M")  # no extension
    ds = pydicom.dcmread(ct)
    ds.Modality = "CT"
    ds.save_as(ct)
    out = tmp_path / "r.csv"
    code, _, err = cli("predict", scans / "h1.png", tmp_path / "ct", "--sex", "M", "--model", tiny_model,
                       "--out", out)
    assert code == 3
    assert _messages(err) == [f"boneage: refused: {ct}: not assessed: DICOM Modality is CT "
                              "(computed tomography), not a radiograph (CR, DX, OT, RG)"]
    refused, accepted = _rows(out)  # sorted: .../ct/slice before .../scans/h1.png
    assert accepted["quality"] == "accepted"
    assert refused["id"] == "slice" and refused["quality"] == "refused" and refused["error"] == ""
    assert refused["quality_reason"].startswith("DICOM Modality is CT") and refused["bone_age_months"] == ""
    code, _, _ = cli("predict", scans / "h1.png", tmp_path / "ct", "--sex", "M", "--model", tiny_model,
                     "--out", out)
    assert code == 3  # resumed: nothing new, the refusal is still in the CSV
    code, out_text, err = cli("predict", ct, "--sex", "M", "--model", tiny_model, "--force", "--json")
    assert code == 0 and json.loads(out_text)["quality"]["verdict"] == "forced"


def test_per_file_lines_never_land_in_the_progress_bar(cli, scans, tiny_model, tmp_path):
    """In a log file or pipe there is no bar to interleave with; on a terminal each line is
    written above the bar (the bar cleared first), so the line a person sees is the message."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    (scans / "bad.png").write_bytes(b"id,sex\n1,M\n")
    code, _, err = cli("predict", scans, "--model", tiny_model, "--out", tmp_path / "log.csv")
    assert code == 2 and "\r" not in err
    assert err.splitlines() == [f"boneage: error: {scans / 'bad.png'}: not an image (looks like text)"] + [
        f"boneage: error: {scans / n}: sex is unknown: the file has no sex tag and none was given; give "
        "--sex M|F, or --sex-from CSV (columns id,sex) for per-image sexes" for n in ("h1.png", "h2.png", "h4.png", "sub/h3.png")]

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a 120-column screen
    proc = subprocess.Popen([sys.executable, "-m", "boneage", "predict", str(scans), "--sex", "F", "--model",
                             str(tiny_model), "--out", str(tmp_path / "tty.csv")],
                            stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    raw = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(main)
    assert proc.wait(60) == 2
    text = raw.decode("utf-8", "replace")
    assert "%|" in text  # the bar was drawn on the terminal
    seen = [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    assert [line for line in seen if "boneage:" in line] == [
        f"boneage: error: {scans / 'bad.png'}: not an image (looks like text)"]
