"""The web page in a real browser: headless Chromium (Debian's package, never a downloaded
browser) driven by Playwright for Python, against the service on a loopback port.

Skips, saying why, where Playwright or a Chromium executable is not installed. CI needs
``pip install playwright`` and ``apt-get install -y chromium`` (``playwright install`` is never
run: it would download a browser). ``BONEAGE_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _chromium() -> str:
    for candidate in (os.environ.get("BONEAGE_CHROMIUM"), "chromium", "chromium-browser"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    pytest.skip("no Chromium executable (apt-get install chromium, or set BONEAGE_CHROMIUM)")


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                                                "(pip install playwright)")
    executable = _chromium()
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # e.g. a Chromium that cannot start in this container
            pytest.skip(f"Chromium at {executable} did not start: {str(exc).splitlines()[0]}")
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        yield context.new_page()
        context.close()
        browser.close()


def test_page_shows_the_same_bone_age_as_the_api(page, server, png_bytes, tmp_path):
    import httpx

    url, _ = server
    image = tmp_path / "hand.png"
    image.write_bytes(png_bytes)
    expected = httpx.post(f"{url}/v1/predict", files={"file": ("hand.png", png_bytes, "image/png")},
                          data={"sex": "M", "force": "true", "age_months": "110"}, timeout=60).json()

    answers = []  # the /v1/predict responses, read once the page has shown them
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/v1/predict") else None)
    page.goto(f"{url}/")
    page.set_input_files("#file", str(image))
    page.select_option("#sex", "M")
    page.fill("#age_months", "110")
    page.check("#force")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)

    assert page.get_attribute("#bone-age", "data-months") == f"{expected['bone_age_months']:.1f}"
    assert page.inner_text("#impression") == expected["clinical"]["statement"]
    assert "forced" in page.inner_text("#quality")
    # No heat map until asked for; the page says in one line what it does and does not show.
    assert not page.is_checked("#show-heatmap") and len(answers) == 1
    assert "heatmap_png_base64" not in answers[0].json() and "radiograph_png_base64" in answers[0].json()
    plain = page.get_attribute("#picture", "src")
    assert plain.startswith("data:image/png;base64,")  # the radiograph as assessed
    note = page.inner_text("#heatmap-note")
    assert "may lie on background" in note and "does not show which bones" in note
    page.click("#show-heatmap")
    page.wait_for_function("document.getElementById('picture').alt.includes('heat map')", timeout=60_000)
    assert len(answers) == 2 and "heatmap_png_base64" in answers[1].json()
    assert page.get_attribute("#picture", "src") != plain
    page.click("#show-heatmap")
    page.wait_for_function("!document.getElementById('picture').alt.includes('heat map')", timeout=10_000)
    assert page.get_attribute("#picture", "src") == plain
    page.click("#show-heatmap")
    if os.environ.get("BONEAGE_SCREENSHOT"):  # how docs/img/service.png is made
        page.screenshot(path=os.environ["BONEAGE_SCREENSHOT"], full_page=True)
    # The report button downloads a PDF.
    with page.expect_download(timeout=60_000) as download:
        page.click("#report")
    path = download.value.path()
    assert open(path, "rb").read(4) == b"%PDF"


def test_page_shows_the_refusal(page, server, png_bytes, tmp_path):
    url, _ = server
    image = tmp_path / "hand.png"
    image.write_bytes(png_bytes)
    page.goto(f"{url}/")
    page.set_input_files("#file", str(image))
    page.select_option("#sex", "F")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=60_000)
    assert "not assessed" in page.inner_text("#status")
    # Keyboard: the form's controls are reachable with Tab, each with a label.
    for control in ("file", "sex", "birth_date", "study_date", "age_months", "force"):
        assert page.locator(f"label[for='{control}']").count() == 1


def test_page_asks_for_the_sex_before_uploading_a_file_without_one(page, server, png_bytes, tmp_path):
    url, _ = server
    image = tmp_path / "hand.png"
    image.write_bytes(png_bytes)
    posted = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.goto(f"{url}/")
    page.set_input_files("#file", str(image))
    page.check("#force")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Choose the sex')",
                           timeout=10_000)
    assert "not DICOM" in page.inner_text("#status") and posted == []
    assert page.evaluate("document.activeElement.id") == "sex"
