"""Readers for bone age label tables.

Accepts the three RSNA 2017 CSV layouts as published and the ``labels.csv`` of a
``labels.csv + images/<id>.<ext>`` folder (the layout of ``../shared/data``; any supported
image extension: ``.png``, ``.jpg``, ``.tif``, ``.dcm`` ...):

- training:   ``id,boneage,male``                       (male True/False)
- validation: ``Image ID,male,Bone Age (months)``
- test:       ``Case ID,Sex,Ground truth bone age (months)``  (Sex M/F)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from boneage.errors import InputError
from boneage.sex import Sex

ID_COLUMNS = ("id", "Image ID", "Case ID")
AGE_COLUMNS = ("boneage", "Bone Age (months)", "Ground truth bone age (months)")
SEX_COLUMNS = ("male", "Sex")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


@dataclass(frozen=True)
class LabelRow:
    """One labelled radiograph: its id, bone age in months (None if unlabelled) and sex."""

    id: str
    boneage: float | None
    sex: Sex

    @property
    def male(self) -> bool:
        return self.sex.is_male


def read_labels(path: str | Path, require_age: bool = True) -> list[LabelRow]:
    """Read any supported label CSV; errors name the file, the row and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError("label file not found", path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header

        def pick(options: tuple[str, ...], what: str, required: bool = True) -> str | None:
            for col in options:
                if col in header:
                    return col
            if required:
                raise InputError(f"missing {what} column (one of {list(options)}); found columns {header}", path)
            return None

        id_col = pick(ID_COLUMNS, "id")
        sex_col = pick(SEX_COLUMNS, "sex")
        age_col = pick(AGE_COLUMNS, "bone age", required=require_age)
        rows: list[LabelRow] = []
        seen: set[str] = set()
        for line_no, rec in enumerate(reader, start=2):
            where = f" (line {line_no})"
            rid = (rec.get(id_col) or "").strip()
            if not rid:
                raise InputError(f"empty id{where}", path)
            if rid in seen:
                raise InputError(f"duplicate id {rid!r}{where}", path)
            seen.add(rid)
            age = None
            if age_col is not None:
                raw = (rec.get(age_col) or "").strip()
                try:
                    age = float(raw)
                except ValueError:
                    raise InputError(f"bone age {raw!r} is not a number{where}", path) from None
                if not 0.0 <= age <= 300.0:
                    raise InputError(f"bone age {age} months is outside 0-300{where}", path)
            try:
                sex = Sex.parse(rec.get(sex_col) or "", where)
            except InputError as exc:
                raise InputError(exc.problem, path) from None
            rows.append(LabelRow(rid, age, sex))
    if not rows:
        raise InputError("label file has no rows", path)
    return rows


def index_images(image_dir: Path) -> dict[str, Path]:
    """Every ``<id>.<ext>`` of a supported extension in ``image_dir``, by id: one listing of
    the folder instead of a file test per id and extension (11,000 ids, six extensions).
    Two files of one id (``1.png`` and ``1.jpg``) are an error naming both: which one a label
    belongs to cannot be guessed."""
    found: dict[str, Path] = {}
    with os.scandir(image_dir) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in IMAGE_EXTENSIONS or not entry.is_file():
                continue
            if stem in found:
                first = found[stem].name
                raise InputError(f"two images for id {stem!r}: {min(first, entry.name)} and "
                                 f"{max(first, entry.name)}; keep one", image_dir)
            found[stem] = Path(entry.path)
    return found


@dataclass(frozen=True)
class Sample:
    """A labelled image on disk."""

    path: Path
    id: str
    boneage: float | None
    sex: Sex

    @property
    def male(self) -> bool:
        return self.sex.is_male


def load_samples(root: str | Path | None = None, csv_path: str | Path | None = None,
                 image_dir: str | Path | None = None, limit: int | None = None,
                 require_age: bool = True) -> list[Sample]:
    """Pair label rows with their image files.

    ``root`` is a folder with ``labels.csv`` and ``images/``; ``csv_path`` and ``image_dir``
    override either part (e.g. an RSNA CSV beside a folder of PNGs). Ids without an image
    are an error that lists the first few.
    """
    if root is None and csv_path is None:
        raise InputError("give a data folder (labels.csv + images/) or a label CSV")
    root = Path(root) if root else None
    if root is not None and not root.is_dir():
        raise InputError("data folder not found", root)
    csv_file = Path(csv_path) if csv_path else root / "labels.csv"
    img_dir = Path(image_dir) if image_dir else (root / "images" if root else csv_file.parent / "images")
    if not img_dir.is_dir():
        raise InputError("image folder not found", img_dir)
    rows = read_labels(csv_file, require_age=require_age)
    if limit is not None:
        rows = rows[:limit]
    images = index_images(img_dir)
    samples, missing = [], []
    for r in rows:
        p = images.get(r.id)
        if p is None:
            missing.append(r.id)
        else:
            samples.append(Sample(p, r.id, r.boneage, r.sex))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} id(s) have no image in {img_dir}: {shown}", csv_file)
    return samples
