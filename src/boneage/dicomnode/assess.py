"""One received instance to its result objects: what a worker does, without any network.

The instance goes through the same reading, quality gate and model as ``boneage predict``
(:func:`boneage.api.predict` with the node's model and ``force`` setting). Two refusals are
the node's own and hold even with ``force``: an instance whose DICOM header says it is not a
radiograph (CT, MR, ... or another body part; :func:`boneage.inference.quality.header_refusal`)
and a SOP class other than CR, DX for presentation or Secondary Capture. ``force`` is meant
for tests and demonstrations on synthetic drawings; a header saying "CT" is not something an
unattended node should ever assess.

An assessed radiograph gets a structured report and the report page (Secondary Capture); a
refused one gets a structured report that says it was not assessed and why, and no bone age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from boneage import api
from boneage.dicomnode.settings import NodeSettings
from boneage.dicomnode.sr import structured_report
from boneage.errors import InputError, QualityRefusal
from boneage.inference.quality import header_refusal
from boneage.io.dicom import dataset_to_image, read_metadata
from boneage.reporting.dicom import secondary_capture
from boneage.reporting.report import build_report, patient_fields, render_page

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
#: The SOP classes the node assesses; other image classes get a "not assessed" report.
ASSESSABLE_SOP_CLASSES = frozenset({CR_IMAGE_STORAGE, DX_IMAGE_STORAGE_FOR_PRESENTATION, SC_IMAGE_STORAGE})
SR_FILE, SC_FILE = "1-sr.dcm", "2-sc.dcm"
NO_HEATMAP = "the DICOM node computes no heat map (it would double the time per image)"
SEX_SOURCE = "DICOM PatientSex"


def result_uid(entry: str, what: str) -> str:
    """A UID for one result of one spool entry, the same every time it is made: an instance
    assessed again after a crash gets the same objects, which the PACS then stores once."""
    return generate_uid(entropy_srcs=["boneage dicom-node", entry, what])


@dataclass
class Assessment:
    """What became of one instance."""

    sop_instance_uid: str
    verdict: str
    """``"assessed"``, ``"assessed (forced)"`` or ``"not assessed"``."""
    reason: str | None
    """Why it was not assessed (or why the gate would have refused a forced one)."""
    results: dict = field(default_factory=dict)
    """File name to pydicom Dataset: the SR, and the page when assessed."""
    seconds: float = 0.0

    @property
    def assessed(self) -> bool:
        """Whether a bone age was given (forced or not)."""
        return self.verdict != "not assessed"


def node_refusal(ds: Dataset) -> str | None:
    """Why the node will not assess ``ds`` whatever the settings, or None."""
    reason = header_refusal(read_metadata(ds))
    if reason is not None:
        return reason
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in ASSESSABLE_SOP_CLASSES:
        name = UID(sop_class).name if sop_class else "no SOP class"
        return (f"{name} is not a projection radiograph (the node assesses CR, DX for presentation "
                "and Secondary Capture images)")
    return None


class Assessor:
    """Assesses spooled instances with one loaded model (one per worker process)."""

    def __init__(self, settings: NodeSettings, predictor=None):
        self.settings = settings
        self.predictor = predictor if predictor is not None else api.load_predictor(
            settings.model, threads=settings.threads)

    def assess(self, path: str | Path) -> Assessment:
        """Read the instance at ``path`` (a spool entry, its name the entry), assess it and
        build its result objects. Problems with the image become a "not assessed" report;
        only a file that is not DICOM at all raises (InputError)."""
        started = time.perf_counter()
        path = Path(path)
        entry = path.stem if path.name != "source.dcm" else path.parent.name
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # pydicom raises many types for a damaged file
            raise InputError(f"spooled instance cannot be read ({type(exc).__name__})", path.name) from None
        uid = str(ds.get("SOPInstanceUID", ""))
        prediction, reason = None, node_refusal(ds)
        loaded = None
        if reason is None:
            try:
                loaded = dataset_to_image(ds, f"SOP Instance {uid}")
                prediction = api.predict(loaded, model=self.predictor, force=self.settings.force)
            except QualityRefusal as exc:
                reason = exc.reason
            except InputError as exc:
                reason = exc.problem
        model_name = self.predictor.recipe.name
        model_hash = self.predictor.info.get("model_sha256", "")[:16]
        sex = loaded.metadata.sex if loaded is not None else read_metadata(ds).sex
        sr = structured_report(
            ds, sop_instance_uid=result_uid(entry, "sr"), series_instance_uid=result_uid(entry, "sr series"),
            prediction=prediction, not_assessed=reason, sex=sex,
            sex_source=SEX_SOURCE if sex is not None else None,
            model_name=model_name, model_hash=model_hash, device_name=self.settings.ae_title)
        results = {SR_FILE: sr}
        verdict = "not assessed"
        if prediction is not None:
            forced = prediction.quality is not None and prediction.quality.forced
            verdict = "assessed (forced)" if forced else "assessed"
            reason = prediction.quality.reason if forced else None
            results[SC_FILE] = self._page(ds, path, loaded, prediction, entry)
        return Assessment(uid, verdict, reason, results, time.perf_counter() - started)

    def _page(self, ds: Dataset, path: Path, loaded, prediction, entry: str) -> Dataset:
        """The report page as a Secondary Capture in the source's study."""
        pixels = loaded.pixels
        if prediction.quality is not None and prediction.quality.corrections:
            # Show the radiograph as assessed (the gate turned or inverted it).
            pixels, _ = self.predictor.screen(loaded.pixels, loaded.metadata, force=True)
        report = build_report(loaded, prediction, None, pixels=pixels, sex_source=SEX_SOURCE,
                              name=f"SOP Instance {ds.get('SOPInstanceUID', '')}",
                              patient=patient_fields(path, loaded.metadata), heatmap_missing=NO_HEATMAP)
        sc = secondary_capture(render_page(report, dpi=self.settings.page_dpi), ds)
        sc.SOPInstanceUID = result_uid(entry, "sc")
        sc.SeriesInstanceUID = result_uid(entry, "sc series")
        sc.file_meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
        return sc
