"""The bone-age report: one radiograph's reading for a clinician, as HTML, PDF or JSON.

A :class:`BoneAgeReport` gathers what the file says about the patient (DICOM tags only),
the chronological age and where it came from, the bone age with its calibrated interval, the
difference, z-score and impression, the Grad-CAM heat map on the radiograph at its own aspect
ratio, the model's name and hash, the date of the report, and the statement of intended use.

>>> report = boneage.api.create_report("hand.dcm")           # sex and ages from the tags
>>> write_report(report, "hand-report.pdf")                  # or .html / .json

Patient identifiers appear in the report itself and nowhere else: they are never logged, and
no error message quotes them (see ``tests/clinical/test_no_patient_data.py``).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.text import Text

from boneage import __version__
from boneage.clinical.reference import REFERENCE_NAME
from boneage.errors import InputError
from boneage.fileutils import atomic_path
from boneage.io import LoadedImage, read_image
from boneage.units import rounded
from boneage.visualize import overlay_rgb

logger = logging.getLogger(__name__)

#: What the report is for; printed on every report, whatever its format.
INTENDED_USE = (
    "Intended use: research and clinical decision support only. This is not a diagnosis. "
    "The bone age is an automated estimate that a qualified clinician must review together "
    "with the radiograph and the child's clinical history before any decision is taken.")
#: Shown in place of the interval when the model file carries no calibration.
NO_INTERVAL = "no calibrated interval"
#: The writers, chosen by the suffix of the output path.
REPORT_SUFFIXES = (".html", ".pdf", ".json")
HEATMAP_CAPTION = ("Grad-CAM heat map: areas whose image features raise the estimated bone age "
                   "(relative influence), on the radiograph as assessed, at its own aspect ratio. "
                   "The map is coarse (the network's feature map is a few cells across): "
                   "it shows regions, not single bones.")
#: The caption when Grad-CAM found nothing that raises the estimate (an all-zero map).
FLAT_HEATMAP_CAPTION = ("Grad-CAM found no area whose features raise the estimated bone age "
                        "(a flat map), so the radiograph is shown without a heat map.")
#: The caption when no map could be computed (``{}``: why).
NO_HEATMAP_CAPTION = "No heat map: {}. The radiograph is shown as assessed."
#: Why a report has no heat map when none was asked for.
HEATMAP_NOT_ASKED = "none was asked for (boneage report --heatmap adds one)"

_A4_INCHES = (8.27, 11.69)
# Matplotlib versions that shape text (HarfBuzz) draw "fi", "ff" as ligature glyphs, which
# have no character code in the PDF: "Identification" or a hash with "ff" in it could then
# not be searched or copied from the report. Older versions draw no ligatures anyway.
_PLAIN_GLYPHS = {"fontfeatures": ["-liga"]} if hasattr(Text, "set_fontfeatures") else {}


@dataclass(frozen=True)
class BoneAgeReport:
    """Everything a report shows; the writers only lay it out.

    ``patient`` holds the identifying fields the image file provides (DICOM tags), already
    formatted, keyed by ``patient_id``, ``patient_name``, ``birth_date``, ``study_date``,
    ``accession_number``; empty for raster images.
    """

    image_name: str
    image_format: str
    image_size: tuple[int, int]
    """(height, width) of the radiograph in pixels."""
    patient: dict
    prediction: object
    """The :class:`~boneage.inference.Prediction` (bone age, interval, clinical, quality, model)."""
    sex_source: str
    overlay: np.ndarray = field(repr=False)
    """(H, W, 3) uint8: the heat map on the radiograph, at the radiograph's aspect ratio."""
    heatmap_peak: tuple[int, int] | None
    """(row, col) of the heat map's maximum in the radiograph's pixels, None for a flat map."""
    report_date: datetime.datetime
    intended_use: str = INTENDED_USE
    heatmap_missing: str | None = None
    """Why there is no heat map at all (e.g. an ONNX model, which Grad-CAM cannot explain)."""

    # -- the content, shared by every writer ----------------------------------------------

    @property
    def heatmap_caption(self) -> str:
        """What the picture shows (a flat map gets its own caption, not an empty colour scale)."""
        if self.heatmap_missing:
            return NO_HEATMAP_CAPTION.format(self.heatmap_missing)
        return HEATMAP_CAPTION if self.heatmap_peak is not None else FLAT_HEATMAP_CAPTION

    @property
    def interval_row(self) -> tuple[str, str]:
        """``(label, value)`` of the interval: the label says what it is, once
        (``"90% prediction interval"``, ``"100.1–142.5 months (8.3–11.9 years)"``)."""
        interval = getattr(self.prediction, "interval", None)
        if interval is None:
            return "Prediction interval", NO_INTERVAL
        return (f"{interval.level:.0%} prediction interval",
                f"{interval.low_months:.1f}–{interval.high_months:.1f} months "
                f"({interval.low_months / 12:.1f}–{interval.high_months / 12:.1f} years)")

    @property
    def model_text(self) -> str:
        """The model's name and hash, the hash called SHA-256 only when it is the whole one
        (predictions carry its first 16 hex digits)."""
        p = self.prediction
        digest = p.model_hash or "unknown"
        kind = "SHA-256" if len(digest) == 64 else "model hash"
        return f"{p.model_name or 'unnamed'} ({kind} {digest})"

    @property
    def interval_text(self) -> str:
        """The interval as text, or :data:`NO_INTERVAL` when the model has no calibration."""
        interval = getattr(self.prediction, "interval", None)
        if interval is None:
            return NO_INTERVAL
        return (f"{interval.level:.0%} interval {interval.low_months:.1f}–{interval.high_months:.1f} "
                f"months ({interval.low_months / 12:.1f}–{interval.high_months / 12:.1f} years)")

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """``[(heading, [(label, value), ...]), ...]`` in reading order."""
        p = self.prediction
        patient_labels = (("patient_id", "Patient ID"), ("patient_name", "Patient name"),
                          ("birth_date", "Birth date"), ("study_date", "Study date"),
                          ("accession_number", "Accession number"))
        patient = [(label, self.patient[key]) for key, label in patient_labels if self.patient.get(key)]
        if not patient:
            patient = [("Identification", f"none in the file ({self.image_format.upper() or 'array'} image)")]
        patient.append(("Sex", f"{'male' if str(p.sex) == 'M' else 'female'} ({self.sex_source})"))

        reading = [("Bone age", p.bone_age_text()), self.interval_row]
        c = p.clinical
        if c is None:
            reading += [("Chronological age", "not known (no dates or age given, none in the file)"),
                        ("Difference, z-score", "not available without the chronological age"),
                        ("Impression", "none without the chronological age")]
        else:
            age, d = c.chronological_age_months, c.difference_months
            z = ("none: " + str(c.no_z_score_reason) if c.z_score is None else
                 f"{c.z_score:+.2f} (SD {c.reference_sd_months:.2f} months, {REFERENCE_NAME})")
            reading += [("Chronological age", f"{age:.1f} months ({age / 12:.1f} years), from {c.age_source}"),
                        ("Difference", f"{d:+.1f} months ({d / 12:+.1f} years), bone minus chronological"),
                        ("z-score", z),
                        ("Impression", c.statement)]

        h, w = self.image_size
        other = [("Image", f"{self.image_name} ({self.image_format.upper() or 'array'}, {w} × {h} px)"),
                 ("Quality check", self._quality_text()),
                 ("Model", self.model_text)]
        # The report date heads the page (HTML and PDF alike), so it is not repeated here.
        return [("Patient", patient), ("Reading", reading), ("Image and model", other)]

    def _quality_text(self) -> str:
        q = getattr(self.prediction, "quality", None)
        if q is None:
            return "not run"
        if q.forced:
            return f"FORCED: assessed although the gate refused it ({q.reason})"
        if q.corrections:
            return "accepted after correction: " + "; ".join(q.corrections)
        return "accepted"

    def to_dict(self, *, overlay: bool = True) -> dict:
        """JSON-ready fields, the same as the HTML and PDF show (``overlay=False`` leaves the
        base64 PNG of the heat-map overlay out)."""
        p = self.prediction
        h, w = self.image_size
        out = {
            "report": "bone age report",
            "report_date": self.report_date.isoformat(timespec="seconds"),
            "image": {"name": self.image_name, "format": self.image_format, "width": w, "height": h},
            "patient": dict(self.patient),
            "sex": str(p.sex),
            "sex_source": self.sex_source,
            "bone_age_months": rounded(p.bone_age_months),
            "bone_age_years": rounded(p.bone_age_months / 12),
            "maturity": p.maturity,
            "interval": None if p.interval is None else p.interval.to_dict(),
            "interval_text": self.interval_text,
            "clinical": None if p.clinical is None else p.clinical.to_dict(),
            "quality": None if p.quality is None else p.quality.to_dict(),
            "model_name": p.model_name,
            "model_hash": p.model_hash,
            "heatmap": {
                "method": "Grad-CAM",
                "caption": self.heatmap_caption,
                "on": "the radiograph as assessed, at its own size (row, col in its pixels)",
                "peak_row": None if self.heatmap_peak is None else self.heatmap_peak[0],
                "peak_col": None if self.heatmap_peak is None else self.heatmap_peak[1],
                "overlay_height": int(self.overlay.shape[0]),
                "overlay_width": int(self.overlay.shape[1]),
            },
            "intended_use": self.intended_use,
        }
        if overlay:
            out["heatmap"]["overlay_png_base64"] = base64.b64encode(overlay_png(self.overlay)).decode("ascii")
        return out


def overlay_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB array."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV wants BGR
    if not ok:  # pragma: no cover - encoding a valid uint8 array does not fail
        raise RuntimeError("PNG encoding of the overlay failed")
    return data.tobytes()


# -- building ------------------------------------------------------------------------------

def _format_date(value) -> str | None:
    """``YYYY-MM-DD`` from a date or a DICOM ``YYYYMMDD`` string; other text as it is."""
    if value is None or value == "":
        return None
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.strftime("%Y-%m-%d")
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or None


def _person_name(value) -> str | None:
    """``Family, Given Middle`` from a DICOM person name (``Family^Given^Middle^Prefix^Suffix``;
    only the alphabetic group before any ``=`` is used)."""
    text = str(value or "").strip()
    if not text:
        return None
    parts = [x.strip() for x in text.split("=")[0].split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    first = " ".join(x for x in (prefix, given, middle) if x)
    name = ", ".join(x for x in (family, first) if x)
    return (f"{name} {suffix}".strip() if suffix else name) or None


def patient_fields(source=None, metadata=None) -> dict:
    """The identifying fields a DICOM file provides, formatted for the report.

    ``source`` is the DICOM path (its header is read for the name and accession number,
    which :class:`~boneage.io.ImageMetadata` does not keep); ``metadata`` its metadata.
    Raster images give an empty dict.
    """
    fields: dict = {}
    if metadata is not None and getattr(metadata, "format", "") == "dicom":
        fields = {"patient_id": metadata.patient_id, "birth_date": _format_date(metadata.birth_date),
                  "study_date": _format_date(metadata.study_date)}
    if source is not None and (metadata is None or getattr(metadata, "format", "") == "dicom"):
        ds = _dicom_header(source)
        if ds is not None:
            fields.update({
                "patient_id": str(ds.get("PatientID", "") or "").strip() or fields.get("patient_id"),
                "patient_name": _person_name(ds.get("PatientName")),
                "birth_date": _format_date(ds.get("PatientBirthDate")) or fields.get("birth_date"),
                "study_date": _format_date(ds.get("StudyDate")) or fields.get("study_date"),
                "accession_number": str(ds.get("AccessionNumber", "") or "").strip() or None,
            })
    return {k: v for k, v in fields.items() if v}


def _dicom_header(source):
    """The DICOM header of ``source`` without its pixels, or None when it is not DICOM."""
    import pydicom

    try:
        return pydicom.dcmread(os.fspath(source), stop_before_pixels=True, force=True)
    except Exception:  # not DICOM or unreadable: the report then shows no patient fields
        return None


def build_report(image, prediction, heatmap: np.ndarray | None, *, pixels: np.ndarray | None = None,
                 sex_source: str = "given", name: str | None = None, patient: dict | None = None,
                 report_date: datetime.datetime | None = None,
                 heatmap_missing: str | None = None) -> BoneAgeReport:
    """A report from an image, its prediction and its heat map.

    Args:
        image: the image file path, or a :class:`~boneage.io.LoadedImage`.
        prediction: the image's :class:`~boneage.inference.Prediction`.
        heatmap: 2-D map in [0, 1] on ``pixels`` (resized to it if the shapes differ); None
            when none could be computed, ``heatmap_missing`` saying why.
        pixels: the radiograph the map lies on (the image as assessed, e.g. after the quality
            gate turned it); default: the file's pixels.
        sex_source: where the sex came from (``"given"``, ``"DICOM PatientSex"``).
        name: how to name the image in the report (default: the file's name).
        patient: the patient fields to show (default: :func:`patient_fields` of the file).
        report_date: default now (local time).
    """
    path = None
    if isinstance(image, (str, os.PathLike)):
        path = image
        image = read_image(image)
    if not isinstance(image, LoadedImage):
        raise TypeError(f"image must be a path or a LoadedImage, got {type(image).__name__}")
    pixels = image.pixels if pixels is None else np.asarray(pixels, dtype=np.float32)
    if heatmap is None:
        heatmap = np.zeros_like(pixels)
        heatmap_missing = heatmap_missing or "none was computed"
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != pixels.shape:
        heatmap = cv2.resize(heatmap, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    peak = None
    if heatmap.size and float(heatmap.max()) > 0:
        peak = tuple(int(v) for v in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))
    if name is None:
        name = Path(path).name if path is not None else "<image>"
    return BoneAgeReport(
        image_name=name, image_format=image.metadata.format or "", image_size=tuple(pixels.shape),
        patient=patient_fields(path, image.metadata) if patient is None else dict(patient),
        prediction=prediction, sex_source=sex_source,
        overlay=overlay_rgb(pixels, heatmap), heatmap_peak=peak,
        report_date=report_date or datetime.datetime.now().astimezone(), heatmap_missing=heatmap_missing)


# -- writers -------------------------------------------------------------------------------

def check_report_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if its suffix names a report format, else a one-line InputError."""
    out = Path(path)
    if out.suffix.lower() not in REPORT_SUFFIXES:
        shown = f"'{out.suffix}'" if out.suffix else "no suffix"
        raise InputError(f"a report is written as {', '.join(REPORT_SUFFIXES)} (chosen by the "
                         f"file's suffix), got {shown}", out)
    if out.is_dir():
        raise InputError(f"is a directory; give a file name ending in {', '.join(REPORT_SUFFIXES)}", out)
    return out


def write_report(report: BoneAgeReport, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``report`` as HTML, PDF or JSON, chosen by the suffix of ``path``, atomically
    (a temporary file beside it, moved into place when complete).

    Raises:
        InputError: another suffix, or ``path`` exists and ``overwrite`` is False.
    """
    out = check_report_path(path)
    if out.exists() and not overwrite:
        raise InputError("file exists; pass overwrite=True (--overwrite) to replace it", out)
    suffix = out.suffix.lower()
    with atomic_path(out) as tmp:
        if suffix == ".json":
            tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        elif suffix == ".html":
            tmp.write_text(render_html(report), encoding="utf-8")
        else:
            write_pdf(report, tmp)
    logger.debug("report written to %s", out)
    return out


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bone age report – {{ report.image_name }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
         max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
  h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
  .date { color: #555; margin-top: 0; }
  h2 { font-size: 1.1rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; margin-top: 1.4rem; }
  table { border-collapse: collapse; width: 100%; }
  th { text-align: left; font-weight: 600; width: 13rem; vertical-align: top; padding: 0.2rem 0.8rem 0.2rem 0; }
  td { padding: 0.2rem 0; }
  figure { margin: 1.2rem 0; text-align: center; }
  figure img { max-width: 100%; max-height: 80vh; height: auto; width: auto; }
  figcaption { color: #444; font-size: 0.9rem; margin-top: 0.4rem; }
  .use { border: 1px solid #b58900; background: #fdf6e3; padding: 0.8rem 1rem; margin-top: 1.5rem; }
</style>
</head>
<body>
<h1>Bone age report</h1>
<p class="date">{{ report.report_date.strftime("%Y-%m-%d %H:%M") }}</p>
{% for heading, rows in sections %}
<h2>{{ heading }}</h2>
<table>
{% for label, value in rows %}  <tr><th scope="row">{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
{% endfor %}
<figure>
  <img alt="Grad-CAM heat map over the radiograph" width="{{ width }}" height="{{ height }}"
       src="data:image/png;base64,{{ png }}">
  <figcaption>{{ caption }}</figcaption>
</figure>
<p class="use" id="intended-use">{{ report.intended_use }}</p>
</body>
</html>
"""


def render_html(report: BoneAgeReport) -> str:
    """The report as one self-contained HTML page (the overlay embedded as a base64 PNG).

    Jinja2 with autoescaping: file names and DICOM text are escaped, so a tag value like
    ``<script>`` shows as text.
    """
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_HTML_TEMPLATE).render(
        report=report, sections=report.sections(), caption=report.heatmap_caption,
        png=base64.b64encode(overlay_png(report.overlay)).decode("ascii"),
        height=report.overlay.shape[0], width=report.overlay.shape[1])


def _page_figure(report: BoneAgeReport):
    """One A4 portrait page: title, the sections as label/value rows, the overlay at its
    aspect ratio with a colour bar, and the intended-use statement at the foot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    width_in, height_in = _A4_INCHES
    fig = Figure(figsize=_A4_INCHES)
    FigureCanvasAgg(fig)

    def text(*args, **kwargs):
        return fig.text(*args, **_PLAIN_GLYPHS, **kwargs)

    margin = 0.6 / width_in                           # 0.6 inch left and right
    line = 13.5 / 72 / height_in                      # one 9-pt text line, in figure height
    y = 1 - 0.55 / height_in
    text(margin, y, "Bone age report", fontsize=17, fontweight="bold", va="top")
    text(1 - margin, y - 0.04 / height_in, report.report_date.strftime("%Y-%m-%d %H:%M"),
             fontsize=9, color="#555555", ha="right", va="top")
    y -= 0.45 / height_in
    value_x = margin + 1.55 / width_in
    chars = int((1 - margin - value_x) * width_in * 72 / (9 * 0.55))  # ~0.55 em per character
    for heading, rows in report.sections():
        y -= 0.4 * line
        text(margin, y, heading, fontsize=11, fontweight="bold", va="top", color="#1f3b5c")
        y -= 1.35 * line
        for label, value in rows:
            wrapped = textwrap.wrap(str(value), chars) or [""]
            text(margin, y, label, fontsize=9, fontweight="bold", va="top")
            for part in wrapped:
                text(value_x, y, part, fontsize=9, va="top")
                y -= line
    # Foot: the intended use, boxed, full width.
    use_lines = textwrap.wrap(report.intended_use, int((1 - 2 * margin) * width_in * 72 / (8.5 * 0.52)))
    foot_top = 0.45 / height_in + len(use_lines) * 12.5 / 72 / height_in
    text(margin, foot_top, "\n".join(use_lines), fontsize=8.5, va="top", linespacing=1.35,
             bbox={"boxstyle": "round,pad=0.5", "facecolor": "#fdf6e3", "edgecolor": "#b58900"})
    # The overlay fills what is left, at its own aspect ratio, centred, with the colour bar
    # right beside the image (not beside an empty axes box).
    caption_h = 2.2 * 11 / 72 / height_in
    box_bottom = foot_top + 0.35 / height_in + caption_h
    box_top = y - 0.25 / height_in
    box_w_in = (1 - 2 * margin) * width_in - 0.9      # room for the colour bar
    box_h_in = max(0.5, (box_top - box_bottom) * height_in)
    oh, ow = report.overlay.shape[:2]
    scale = min(box_w_in / ow, box_h_in / oh)
    img_w, img_h = ow * scale, oh * scale
    left = margin + (box_w_in - img_w) / 2 / width_in
    ax = fig.add_axes((left, box_bottom + (box_h_in - img_h) / height_in,
                       img_w / width_in, img_h / height_in))
    ax.imshow(report.overlay, interpolation="antialiased")
    ax.set_axis_off()
    if report.heatmap_peak is not None:  # a flat map has no scale to show
        from matplotlib import colormaps

        cax = fig.add_axes((left + img_w / width_in + 0.12 / width_in,
                            box_bottom + (box_h_in - img_h) / height_in, 0.15 / width_in, img_h / height_in))
        bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colormaps["turbo"]), cax=cax)
        bar.set_label("relative influence", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    caption = "\n".join(textwrap.wrap(report.heatmap_caption, int((1 - 2 * margin) * width_in * 72 / (8 * 0.52))))
    text(0.5, box_bottom - 0.08 / height_in, caption, fontsize=8, ha="center", va="top",
             color="#444444")
    return fig


def write_pdf(report: BoneAgeReport, path) -> None:
    """The report as a one-page PDF, to a path or a binary file object."""
    from matplotlib.backends.backend_pdf import PdfPages

    fig = _page_figure(report)
    # No patient data in the PDF's document information: file browsers and indexers show it.
    with PdfPages(path, metadata={"Title": "Bone age report", "Creator": f"boneage {__version__}"}) as pdf:
        pdf.savefig(fig)
    fig.clear()


def render_page(report: BoneAgeReport, *, dpi: int = 120) -> np.ndarray:
    """The PDF's page as an (H, W, 3) uint8 RGB array (A4 at ``dpi``), e.g. for a DICOM
    Secondary Capture or a preview PNG."""
    fig = _page_figure(report)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    fig.clear()
    return rgb
