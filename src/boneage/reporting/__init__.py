"""The clinician's report of one radiograph: built from a Prediction handed to it, written as
HTML, PDF or JSON (:mod:`~boneage.reporting.report`) or as a DICOM Secondary Capture in the
source's study (:mod:`~boneage.reporting.dicom`). Nothing here predicts: :func:`boneage.api.create_report`
reads, screens, predicts and then builds the report."""

from boneage.reporting.report import BoneAgeReport, build_report, check_report_path, write_report

__all__ = ["BoneAgeReport", "build_report", "check_report_path", "write_report"]
