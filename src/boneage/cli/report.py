"""``boneage report``: one radiograph's clinical report as HTML, PDF or JSON (and DICOM).

One of the commands of the light install (no PyTorch; ``--heatmap`` then says so in the
report). :func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both). Standard output and error carry the file names and the bone age only:
the patient's name, ID and dates go into the report files and nowhere else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.cli.age_arguments import age_months, calendar_date
from boneage.reporting.dicom import check_dicom_out_path, write_report_dicom
from boneage.reporting.report import check_report_path, write_report
from boneage.api import create_report
from boneage.errors import InputError
from boneage.io import read_image
from boneage.sex import Sex


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``report`` to its parser ``s``."""
    s.add_argument("image", metavar="IMAGE")
    s.add_argument("--out", required=True, metavar="FILE.{html,pdf,json}",
                   help="the report; its suffix chooses the format")
    s.add_argument("--sex", help="M or F (default: the DICOM PatientSex tag)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--birth-date", type=calendar_date, metavar="DATE",
                   help="child's birth date, YYYY-MM-DD or YYYYMMDD (default: the DICOM tag)")
    s.add_argument("--study-date", type=calendar_date, metavar="DATE",
                   help="date the radiograph was taken, YYYY-MM-DD or YYYYMMDD (default: the DICOM tags)")
    s.add_argument("--age-months", type=age_months, metavar="MONTHS",
                   help="chronological age in months, 0-240 (used when the dates are not given)")
    s.add_argument("--patient-id", metavar="ID",
                   help="patient ID to print on the report (default: the DICOM PatientID tag; a "
                        "PNG has none); it goes into the report only, never to the terminal or a log")
    s.add_argument("--accession", metavar="NUMBER",
                   help="accession number to print on the report (default: the DICOM "
                        "AccessionNumber tag)")
    s.add_argument("--force", action="store_true",
                   help="assess an image the quality gate refuses; the report says it was forced")
    s.add_argument("--heatmap", action="store_true",
                   help="add a Grad-CAM heat map (needs PyTorch, the 'train' extra; off by default: on "
                        "real radiographs its hottest area may lie on background)")
    s.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    s.add_argument("--dicom-out", metavar="FILE.dcm",
                   help="also write the report page as a DICOM Secondary Capture in the source's "
                        "study (DICOM input only)")


def _refuse_overwrite(path: Path, overwrite: bool) -> Path:
    # Not cli.common.refuse_overwrite: its message says --force, which here means "assess an
    # image the quality gate refuses" (as in ``predict``); replacing files is --overwrite.
    if path.exists() and not overwrite:
        raise InputError("file exists; pass --overwrite to replace it", path)
    return path


def run(args: argparse.Namespace) -> int:
    """Write the report (and the DICOM Secondary Capture when asked); 0 on success.

    Every output path is checked before the model runs, so a bad suffix or an existing file
    costs nothing; user errors raise :class:`~boneage.errors.BoneAgeError` for ``main``.
    """
    out = _refuse_overwrite(check_report_path(args.out), args.overwrite)
    dicom_out = None
    if args.dicom_out is not None:
        dicom_out = _refuse_overwrite(check_dicom_out_path(args.dicom_out), args.overwrite)
        if dicom_out.resolve() == out.resolve():
            raise InputError("--dicom-out and --out name the same file; give two names", dicom_out)
        if args.patient_id is not None or args.accession is not None:
            # The Secondary Capture is filed under the source's own patient and study tags;
            # a page showing other identifiers would contradict its header.
            raise InputError("--dicom-out files the report under the source's own patient ID and "
                             "accession number; leave out --patient-id and --accession", dicom_out)
    sex = Sex.parse_optional(args.sex)
    loaded = read_image(args.image)
    if dicom_out is not None and loaded.metadata.format != "dicom":
        raise InputError(f"--dicom-out needs a DICOM input image (the report joins its study); "
                         f"this one is {loaded.metadata.format.upper() or 'not DICOM'}", args.image)
    report = create_report(loaded, sex, model=args.model, heatmap=args.heatmap, birth_date=args.birth_date,
                           study_date=args.study_date, age_months=args.age_months,
                           force=args.force, name=str(args.image), source=args.image,
                           patient_id=args.patient_id, accession=args.accession)
    write_report(report, out, overwrite=True)  # existence was checked above
    written = [str(out)]
    if dicom_out is not None:
        write_report_dicom(report, args.image, dicom_out, overwrite=True)
        written.append(str(dicom_out))
    p = report.prediction
    print(f"{args.image}: bone age {p.bone_age_text()}, sex {p.sex}; report: {', '.join(written)}")
    return 0
