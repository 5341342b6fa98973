"""``boneage report``: the HTML, PDF and JSON reports render, carry the reading, the interval
(or say there is none), the intended use and the heat map on the radiograph at its own
aspect ratio."""

from __future__ import annotations

import base64
import datetime
import json
import re
from dataclasses import replace
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from boneage.reporting.report import INTENDED_USE, NO_INTERVAL, build_report, render_html, render_page, write_report
from boneage.api import create_report
from boneage.data.synthetic import write_example_radiograph
from boneage.errors import InputError
from boneage.inference.interval import PredictionInterval
from boneage.io import write_dicom
from boneage.inference.loader import load_predictor
from pdf_text import pdf_text
from rounding import unrounded

WHEN = datetime.datetime(2026, 11, 25, 9, 30)


@pytest.fixture(scope="module")
def predictor():
    return load_predictor()  # the bundled model, on CPU


@pytest.fixture(scope="module")
def tall_png(tmp_path_factory):
    """An image 300 px high and 200 px wide (not the model's square) that the bundled gate
    refuses whatever model is bundled: a generated MR-like slice, forced past the gate."""
    from boneage.data.negatives import negative_image

    path = tmp_path_factory.mktemp("rep") / "hand.png"
    cv2.imwrite(str(path), np.round(negative_image("other_modality/mr", 3, size=(300, 200)) * 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def report(tall_png, predictor):
    return create_report(tall_png, "M", model=predictor, age_months=110, report_date=WHEN, force=True,
                         heatmap=True)


class _Page(HTMLParser):
    """Visible text and <img> attributes of an HTML page."""

    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.images: list[dict] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def parse_html(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def decode_data_png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_html_report_shows_the_reading_the_interval_the_forcing_and_the_intended_use(report):
    page = parse_html(render_html(report))
    text = " ".join(page.text)
    p = report.prediction
    months = p.bone_age_months
    assert f"{months:.1f} months ({months / 12:.1f} years)" in text
    # the bundled model is calibrated; the image was forced past the gate
    assert f"{p.interval.low_months:.1f}–{p.interval.high_months:.1f} months" in text and NO_INTERVAL not in text
    assert p.quality.forced and "forced" in text.lower()
    without = " ".join(parse_html(render_html(replace(report, prediction=replace(p, interval=None)))).text)
    assert NO_INTERVAL in without
    assert INTENDED_USE in text and "not a diagnosis" in text
    assert "110.0 months (9.2 years), from age given" in text
    assert report.prediction.clinical.statement in text
    assert "z-score" in text and f"{report.prediction.clinical.z_score:+.2f}" in text
    assert report.prediction.model_name in text and report.prediction.model_hash in text
    assert "2026-11-25" in text and "hand.png" in text
    # One embedded image, the overlay, at the radiograph's aspect ratio (300 x 200).
    assert len(page.images) == 1
    overlay = decode_data_png(page.images[0]["src"])
    assert overlay.shape == (300, 200, 3)
    assert "script" not in page.tags and "link" not in page.tags  # self-contained, nothing fetched


def _reading_phrases(report) -> list[str]:
    """What every rendering of ``report`` must say: bone age, interval, z-score, impression."""
    p, c = report.prediction, report.prediction.clinical
    return [f"Bone age {p.bone_age_months:.1f} months ({p.bone_age_months / 12:.1f} years)",
            f"90% prediction interval {p.interval.low_months:.1f}", f"{p.interval.high_months:.1f} months",
            f"z-score {c.z_score:+.2f} (SD {c.reference_sd_months:.2f} months",
            f"Impression {c.statement}"]


def _says_each_thing_once(text: str, report) -> None:
    for phrase in _reading_phrases(report):
        assert phrase in text, (phrase, text)
    assert text.count("2026-11-25") == 1  # the date heads the report, once
    assert text.count("interval") == 1  # "Interval: 90% interval ..." said it twice
    hash16 = report.prediction.model_hash
    assert len(hash16) == 16 and f"(model hash {hash16})" in text and "SHA-256" not in text


def test_html_and_pdf_say_the_reading_once_each(report, tmp_path):
    _says_each_thing_once(" ".join(parse_html(render_html(report)).text), report)
    _says_each_thing_once(pdf_text(write_report(report, tmp_path / "r.pdf").read_bytes()), report)


def test_html_shows_a_calibrated_interval_when_the_model_has_one(report):
    interval = PredictionInterval(low_months=100.0, high_months=124.0, level=0.9)
    with_interval = replace(report, prediction=replace(report.prediction, interval=interval))
    text = " ".join(parse_html(render_html(with_interval)).text)
    assert "90% prediction interval 100.0–124.0 months (8.3–10.3 years)" in text and NO_INTERVAL not in text
    data = with_interval.to_dict(overlay=False)
    assert data["interval"] == {"low_months": 100.0, "high_months": 124.0, "level": 0.9}


def test_json_report_has_the_same_fields(report, tmp_path):
    out = write_report(report, tmp_path / "r.json")
    data = json.loads(out.read_text(encoding="utf-8"))
    p = report.prediction
    assert unrounded(data) == []  # months, years and the z-score to 0.01
    assert data["bone_age_months"] == round(p.bone_age_months, 2)
    assert data["interval"] == p.interval.to_dict() and "90% interval" in data["interval_text"]
    assert data["clinical"]["chronological_age_months"] == 110.0
    assert data["clinical"]["age_source"] == "age given"
    assert data["clinical"]["impression"] == p.clinical.impression
    assert data["clinical"]["z_score"] == round(p.clinical.z_score, 2)
    assert data["sex"] == "M" and data["sex_source"] == "given"
    assert data["model_name"] == p.model_name and data["model_hash"] == p.model_hash
    assert data["report_date"].startswith("2026-11-25T09:30")
    assert data["intended_use"] == INTENDED_USE
    assert data["image"] == {"name": "hand.png", "format": "png", "width": 200, "height": 300}
    assert data["patient"] == {}  # a PNG has no patient fields
    assert data["quality"]["verdict"] == "forced" and data["quality"]["reason"]  # not a radiograph, forced past the gate
    heat = data["heatmap"]
    assert (heat["overlay_height"], heat["overlay_width"]) == (300, 200)
    assert 0 <= heat["peak_row"] < 300 and 0 <= heat["peak_col"] < 200
    assert decode_data_png("data:image/png;base64," + heat["overlay_png_base64"]).shape == (300, 200, 3)


def test_pdf_report_is_a_one_page_pdf(report, tmp_path):
    out = write_report(report, tmp_path / "r.pdf")
    data = out.read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-64:]
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", data)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]  # no temp file left


def test_rendered_page_is_a4_and_not_blank(report):
    page = render_page(report, dpi=50)
    assert page.dtype == np.uint8 and page.shape[2] == 3
    assert page.shape[0] / page.shape[1] == pytest.approx(11.69 / 8.27, rel=0.01)
    assert (page < 128).mean() > 0.02  # text and the radiograph, not a white sheet


def test_writer_is_chosen_by_suffix_and_others_are_one_line_errors(report, tmp_path):
    with pytest.raises(InputError, match=r"\.html, \.pdf, \.json.*'\.txt'") as info:
        write_report(report, tmp_path / "r.txt")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no suffix"):
        write_report(report, tmp_path / "report")
    write_report(report, tmp_path / "r.HTML")  # the suffix's case does not matter
    with pytest.raises(InputError, match="exists"):
        write_report(report, tmp_path / "r.HTML")
    assert write_report(report, tmp_path / "r.HTML", overwrite=True).is_file()


def test_build_report_maps_a_given_heat_map_onto_the_radiograph(tall_png, report):
    # A map with a single hot spot, given at a smaller size: it is resized onto the image,
    # and the peak is reported in the radiograph's own pixels.
    heat = np.zeros((30, 20), np.float32)
    heat[3, 15] = 1.0
    built = build_report(tall_png, report.prediction, heat, report_date=WHEN)
    row, col = built.heatmap_peak
    assert abs(row - 34.5) <= 1 and abs(col - 154.5) <= 1  # pixel centres: (3 + 0.5) * 10 - 0.5
    assert built.overlay.shape == (300, 200, 3) and built.image_size == (300, 200)
    assert built.sex_source == "given" and built.patient == {}


def test_a_flat_heat_map_is_said_to_be_flat(tall_png, report):
    from boneage.reporting.report import FLAT_HEATMAP_CAPTION

    flat = build_report(tall_png, report.prediction, np.zeros((10, 10), np.float32), report_date=WHEN)
    assert flat.heatmap_peak is None
    assert FLAT_HEATMAP_CAPTION in " ".join(parse_html(render_html(flat)).text)
    assert flat.to_dict(overlay=False)["heatmap"]["peak_row"] is None
    assert render_page(flat, dpi=40).shape[2] == 3  # no colour bar, still a page


def test_report_of_a_dicom_shows_its_patient_fields_escaped(tmp_path, predictor):
    png = write_example_radiograph(tmp_path / "h.png", age_months=100, sex="F", size=(280, 220))
    pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    dcm = write_dicom(tmp_path / "h.dcm", pixels, sex="F", birth_date=datetime.date(2015, 2, 1),
                      study_date=datetime.date(2023, 6, 1), patient_id="<b>ID-77</b>")
    report = create_report(dcm, model=predictor, report_date=WHEN, force=True)
    assert report.sex_source == "DICOM PatientSex" and str(report.prediction.sex) == "F"
    assert report.patient == {"patient_id": "<b>ID-77</b>", "birth_date": "2015-02-01",
                              "study_date": "2023-06-01"}
    assert report.prediction.clinical.age_source == "DICOM PatientBirthDate and StudyDate"
    html = render_html(report)
    assert "<b>ID-77</b>" not in html and "&lt;b&gt;ID-77&lt;/b&gt;" in html  # autoescaped
    text = " ".join(parse_html(html).text)
    assert "Patient ID" in text and "2015-02-01" in text and "female (DICOM PatientSex)" in text


def test_report_without_an_age_says_so(tall_png, predictor):
    report = create_report(tall_png, "F", model=predictor, report_date=WHEN, force=True)
    text = " ".join(parse_html(render_html(report)).text)
    assert report.prediction.clinical is None
    assert "Chronological age not known" in text and "Impression none without" in text
    assert report.to_dict(overlay=False)["clinical"] is None


def test_report_cli_end_to_end(cli, tall_png, tmp_path):
    out = tmp_path / "r.html"
    code, stdout, err = cli("report", tall_png, "--force", "--sex", "M", "--age-months", "110", "--out", out)
    assert code == 0, err
    assert stdout.startswith(f"{tall_png}: bone age ") and stdout.strip().endswith(f"report: {out}")
    assert stdout.count("\n") == 1 and err == ""
    assert INTENDED_USE in " ".join(parse_html(out.read_text(encoding="utf-8")).text)

    # An existing report is kept unless --overwrite; --force is the quality gate's, as in predict.
    before = out.stat().st_mtime_ns
    code, stdout, err = cli("report", tall_png, "--force", "--sex", "M", "--out", out)
    assert code == 2 and stdout == "" and "exists" in err and "--overwrite" in err
    assert out.stat().st_mtime_ns == before
    code, _, err = cli("report", tall_png, "--force", "--sex", "M", "--out", out, "--overwrite")
    assert code == 0, err

    code, _, err = cli("report", tall_png, "--force", "--sex", "M", "--out", tmp_path / "r.pdf",
                       "--birth-date", "2014-03-09", "--study-date", "2024-05-01")
    assert code == 0, err
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("args,message", [
    (["--out", "{tmp}/r.docx"], ".html, .pdf, .json"),
    (["--out", "{tmp}/r.json", "--birth-date", "2024-05-01", "--study-date", "2014-03-09"],
     "before birth date"),
    (["--out", "{tmp}/r.json", "--age-months", "300"], "0–240"),
    (["--out", "{tmp}/r.json", "--study-date", "05/01/2024"], "unknown format"),
])
def test_report_cli_bad_input_is_one_line(cli, tall_png, tmp_path, args, message):
    code, stdout, err = cli("report", tall_png, "--force", "--sex", "M", *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and stdout == ""
    assert err.startswith("boneage: error: ") and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_report_cli_puts_a_given_patient_id_and_accession_on_the_report(cli, tall_png, tmp_path):
    out = tmp_path / "r.html"
    code, stdout, err = cli("report", tall_png, "--force", "--sex", "F", "--out", out,
                            "--patient-id", " PX 9 ", "--accession", "A-77")
    assert code == 0, err
    text = " ".join(parse_html(out.read_text(encoding="utf-8")).text)
    assert "Patient ID PX 9" in text and "Accession number A-77" in text and "Identification" not in text
    code, _, err = cli("report", tall_png, "--force", "--sex", "F", "--out", tmp_path / "s.html",
                       "--dicom-out", tmp_path / "s.dcm", "--accession", "A-77")
    assert code == 2 and "leave out --patient-id and --accession" in err and "A-77" not in err


def test_report_cli_without_a_sex_says_how_to_give_it(cli, tall_png, tmp_path):
    code, stdout, err = cli("report", tall_png, "--force", "--out", tmp_path / "r.json")
    assert code == 2 and stdout == ""
    assert err == (f"boneage: error: {tall_png}: sex is unknown: the file has no sex tag and none was "
                   "given; give --sex M|F\n")
