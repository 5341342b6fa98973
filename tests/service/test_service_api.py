"""The HTTP API: happy path, model facts, the page and the offline docs."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest
from pdf_text import pdf_text
from rounding import unrounded


def _post(client, path, data_bytes, **fields):
    files = {"file": ("hand.png", data_bytes, "image/png")}
    return client.post(path, files=files, data={k: str(v) for k, v in fields.items()})


def test_predict_forced_synthetic_matches_python_api(client, predictor, png_bytes):
    from boneage import api
    from boneage.io.image import read_image_bytes

    r = _post(client, "/v1/predict", png_bytes, sex="M", age_months=110, force="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert unrounded(body) == []  # months, years and the z-score to 0.01
    expected = api.predict(read_image_bytes(png_bytes), "M", model=predictor, age_months=110, force=True)
    assert body["bone_age_months"] == round(expected.bone_age_months, 2)
    assert body["sex"] == "M" and body["sex_source"] == "given"
    assert body["interval"]["low_months"] < body["bone_age_months"] < body["interval"]["high_months"]
    assert body["clinical"]["chronological_age_months"] == 110
    assert body["clinical"]["z_score"] is not None and body["clinical"]["impression"]
    assert body["quality"]["verdict"] == "forced" and body["quality"]["reason"]
    assert body["model_hash"] == predictor.info["model_sha256"][:16]
    assert body["image"] == {"format": "png", "width": 256, "height": 256}
    assert "heatmap_png_base64" not in body  # only when asked: it doubles the time


def test_predict_without_force_is_refused_with_the_gates_reason(client, png_bytes):
    r = _post(client, "/v1/predict", png_bytes, sex="M")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert re.match(r"not assessed: (does not look like a hand radiograph|looks like an? .+ radiograph, not "
                    r"a hand|unlike the hand radiographs)", detail) and "force=true" in detail


def test_predict_dates_give_the_chronological_age(client, png_bytes):
    r = _post(client, "/v1/predict", png_bytes, sex="F", force="1", birth_date="2015-03-01", study_date="20250301")
    assert r.status_code == 200, r.text
    assert r.json()["clinical"]["chronological_age_months"] == pytest.approx(120, abs=0.5)


def test_predict_heatmap_is_a_png_of_the_radiographs_aspect(client, png_bytes):
    r = _post(client, "/v1/predict", png_bytes, sex="M", force="true", heatmap="true")
    assert r.status_code == 200, r.text
    body = r.json()
    for key in ("heatmap_png_base64", "radiograph_png_base64"):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(body[key]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (256, 256, 3), key


def test_report_is_a_pdf_of_the_same_reading(client, png_bytes):
    r = _post(client, "/v1/report", png_bytes, sex="M", force="true", age_months=100)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and "attachment" in r.headers["content-disposition"]
    body = _post(client, "/v1/predict", png_bytes, sex="M", force="true", age_months=100).json()
    months, interval, c = body["bone_age_months"], body["interval"], body["clinical"]
    text = pdf_text(r.content)
    # JSON rounds to 0.01 month, the PDF to 0.1: 103.4499 is 103.45 in JSON and 103.4 in the
    # PDF, so the interval's ends are compared as numbers, within the PDF's rounding (the
    # dash between them is a glyph of another font, not in the extracted text).
    shown = re.search(r"90% prediction interval (\d+\.\d)\D*(\d+\.\d) months", text)
    assert shown, text
    assert abs(float(shown[1]) - interval["low_months"]) <= 0.0501, (shown[0], interval)
    assert abs(float(shown[2]) - interval["high_months"]) <= 0.0501, (shown[0], interval)
    for phrase in (f"Bone age {months:.1f} months ({months / 12:.1f} years)",
                   f"z-score {c['z_score']:+.2f} (SD {c['reference_sd_months']:.2f} months",
                   f"Impression {c['statement']}", "Intended use"):
        assert phrase in text, (phrase, text)


def test_report_refused_without_force(client, png_bytes):
    r = _post(client, "/v1/report", png_bytes, sex="M")
    assert r.status_code == 422 and r.json()["detail"].startswith("not assessed:")


def test_model_and_health(client, predictor):
    r = client.get("/v1/model")
    assert r.status_code == 200
    m = r.json()
    assert m["name"] == predictor.recipe.name and m["hash"] == predictor.info["model_sha256"][:16]
    from boneage.inference.modelfile import validation_mae

    assert m["validation_mae_months"] == round(validation_mae(predictor.info)[0], 2)
    assert m["interval"]["level"] == pytest.approx(0.9) and m["recipe"]["views"] >= 1
    assert m["quality_gate"]["accepted_test"] > 0.9
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"


def test_docs_and_page_work_offline(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "https://" not in docs.text and "cdn" not in docs.text.lower()
    for src in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        if src in docs.text:
            assert client.get(src).status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/report", "/v1/model", "/health"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="form"' in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "https://" not in r.text


def test_access_log_carries_no_patient_data(client, png_bytes, caplog, monkeypatch):
    import logging

    # The CLI (run by other tests in this process) stops "boneage" records at its own handler;
    # let them reach caplog's root handler here, whatever ran before.
    monkeypatch.setattr(logging.getLogger("boneage"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    files = {"file": ("Doe_Jane_4711.png", png_bytes, "image/png")}
    r = client.post("/v1/predict?patient=Doe_Jane", files=files,
                    data={"sex": "F", "force": "true", "birth_date": "2014-07-13", "study_date": "2025-01-02"})
    assert r.status_code == 200
    # The server's log lines only: the test's HTTP client logs its own request URL.
    server = "\n".join(rec.getMessage() for rec in caplog.records
                        if rec.name.startswith(("boneage", "uvicorn", "fastapi", "starlette")))
    assert "/v1/predict" in server  # the access line is there...
    for secret in ("Doe_Jane", "4711", "2014-07-13", "2025-01-02", "patient="):
        assert secret not in server  # ...without the file name, the dates or the query


def test_503_while_the_model_loads():
    from fastapi.testclient import TestClient

    from boneage.service import create_app

    app = create_app("never-loaded.safetensors")
    client = TestClient(app)  # no `with`: the lifespan (which starts loading) never runs
    for r in (client.get("/health"), client.get("/v1/model"),
              client.post("/v1/predict", files={"file": ("a.png", b"x", "image/png")})):
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert r.headers["retry-after"] == "5"


def test_503_when_the_model_cannot_be_loaded(tmp_path):
    from fastapi.testclient import TestClient

    from boneage.service import create_app

    app = create_app(tmp_path / "missing.safetensors")
    with TestClient(app) as client:
        assert app.state.model.wait(30) is False
        r = client.get("/v1/model")
        assert r.status_code == 503 and r.json()["detail"].startswith("the model could not be loaded")


def test_serve_refuses_a_missing_model_file_in_one_line(cli, tmp_path):
    code, _, err = cli("serve", "--model", str(tmp_path / "nope.safetensors"), "--port", "0")
    assert code == 2 and "nope.safetensors" in err and len(err.strip().splitlines()) == 1
