"""Many images at once: which files, which share of them, whose sex, and the results CSV.

What ``boneage predict`` does with folders, glob patterns, ``--shard``, ``--sex-from`` and
``--out``, as plain functions the CLI and :func:`boneage.api.predict_files` share:

* :func:`expand_inputs` turns files, folders (recursively) and glob patterns into one sorted,
  de-duplicated list of image files;
* :func:`parse_shard` / :func:`take_shard` pick a fixed 1/N of that list, so N jobs of a
  scheduler array cover every image exactly once;
* :func:`read_sex_csv` / :func:`check_sex_ids` read per-image sex from a CSV;
* :func:`prefetch_images` decodes the next images in threads while the model runs;
* :class:`ResultsCSV` writes one row per image, flushed as it goes, and resumes a run that was
  stopped (a half-written last line is dropped; rows that ended in an error are retried).

Problems with what the user gave are :class:`~boneage.errors.InputError` s naming the value and
what is allowed.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from boneage.errors import BoneAgeError, InputError, QualityRefusal
from boneage.fileutils import atomic_path
from boneage.io import read_image
from boneage.sex import Sex

if TYPE_CHECKING:
    from boneage.inference.predictor import Prediction
    from boneage.io import LoadedImage

#: File name endings taken as images when walking a folder or expanding a glob.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
_GLOB_CHARACTERS = "*?["
# A DICOM file (Part 10) has a 128-byte preamble and then these four bytes.
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

#: Columns of the results CSV, in order.
RESULT_COLUMNS = (
    "id", "path", "sex", "sex_source", "bone_age_months", "interval_low_months",
    "interval_high_months", "interval_level", "maturity", "chronological_age_months", "age_source",
    "z_score", "impression", "quality", "quality_reason", "error",
)

SEX_SOURCES = ("argument", "csv", "dicom", "none")


# --- which files ---------------------------------------------------------------------------

def image_id(path: str | os.PathLike) -> str:
    """The id of an image file: its name without an image extension (``"1377"`` for
    ``"images/1377.png"``). Other endings are kept, so DICOM files named by a UID
    (``1.2.840.113619.2.5``) keep their whole name."""
    p = Path(path)
    return p.stem if p.suffix.lower() in IMAGE_EXTENSIONS else p.name


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether the file starts like a DICOM file ('DICM' at byte 128); False if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def _looks_like_image(path: Path) -> bool:
    # The extension decides when there is one we know; anything else costs one 132-byte read,
    # which finds DICOM files saved without an extension or named by their UID.
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path)


def _hidden(name: str) -> bool:
    # macOS leaves "._name.png" resource files beside every image copied from it: they end in
    # .png but are not images, and would be an error row each.
    return name.startswith(".")


def _images_in_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        found += [Path(root) / f for f in files if not _hidden(f) and _looks_like_image(Path(root) / f)]
    return found


def expand_inputs(specs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named by ``specs``: files as given, folders walked recursively, and glob
    patterns (``*``, ``?``, ``[...]``, ``**`` for any depth) expanded here, so quoted patterns
    work where the shell would expand too many for one command line.

    Folders and patterns contribute only image files (by extension: PNG, JPEG, TIFF, BMP,
    .dcm; or DICOM files without one, found by their 'DICM' marker); hidden files are
    skipped. A file named directly is taken whatever it is (an unreadable one becomes its
    own error row later). The result is de-duplicated and sorted by path.

    Raises:
        InputError: a folder with no image in it, or a pattern that matches none.
    """
    found: list[Path] = []
    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            images = _images_in_folder(path)
            if not images:
                raise InputError(f"folder holds no image files (allowed: {', '.join(IMAGE_EXTENSIONS)} "
                                 "or DICOM without an extension)", text)
            found += images
        elif not path.exists() and any(c in text for c in _GLOB_CHARACTERS):
            images = []
            for match in map(Path, glob.glob(text, recursive=True)):
                if match.is_dir():
                    images += _images_in_folder(match)
                elif match.is_file() and _looks_like_image(match):
                    images.append(match)
            if not images:
                raise InputError(f"pattern {text!r} matches no image file (allowed: "
                                 f"{', '.join(IMAGE_EXTENSIONS)} or DICOM without an extension)")
            found += images
        else:
            found.append(path)
    unique: dict[str, Path] = {}
    for p in found:
        # The same file reached twice (a folder and a pattern inside it, "./a.png" and
        # "a.png") is assessed once; the first spelling is the one reported.
        unique.setdefault(os.path.abspath(p), Path(os.path.normpath(p)))
    return sorted(unique.values(), key=lambda p: str(p))


# --- which share of them -------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """``(K, N)`` from ``"K/N"`` with ``1 <= K <= N``.

    Raises:
        InputError: anything else, naming the value.
    """
    parts = str(text).strip().split("/")
    try:
        k, n = (int(x) for x in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        k, n = 0, 0
    if not 1 <= k <= n:
        raise InputError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/8), got {text!r}")
    return k, n


def take_shard(paths: Sequence, k: int, n: int) -> list:
    """Shard ``k`` of ``n`` of the sorted ``paths``: every n-th, starting at the k-th.

    The n shards together hold every path exactly once; taking every n-th (rather than a
    contiguous block) spreads a folder sorted by age or site evenly over the jobs.
    """
    if not 1 <= k <= n:
        raise InputError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return list(paths)[k - 1::n]


# --- whose sex -----------------------------------------------------------------------------

_ID_COLUMNS = ("id", "image", "path")
_SEX_COLUMNS = ("sex", "male")


def read_sex_csv(path: str | os.PathLike) -> dict[str, Sex]:
    """Per-image sex from a CSV: ``{image id: Sex}``.

    The id comes from an ``id`` column, else the file name (without extension) in an
    ``image`` or ``path`` column; the sex from a ``sex`` column (M/F) or a ``male`` column
    (true/false, 1/0). Column names are matched without regard to case.

    Raises:
        InputError: a missing or unreadable file, a missing column, an empty id, a sex that
            is neither, or one id given two different sexes; the message names the value.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("sex CSV not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the sex CSV: {exc}", path) from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    id_key = next((c for c in _ID_COLUMNS if c in columns), None)
    sex_key = next((c for c in _SEX_COLUMNS if c in columns), None)
    header = ", ".join(repr(c) for c in reader.fieldnames or []) or "nothing"
    if id_key is None:
        raise InputError(f"sex CSV has no id column (its header has {header}; allowed: "
                         f"{', '.join(_ID_COLUMNS)})", path)
    if sex_key is None:
        raise InputError(f"sex CSV has no sex column (its header has {header}; allowed: "
                         "sex with M/F, or male with true/false or 1/0)", path)
    sexes: dict[str, Sex] = {}
    for row in reader:
        line = reader.line_num
        raw_id = (row.get(columns[id_key]) or "").strip()
        if not raw_id:
            raise InputError(f"line {line}: empty {id_key}; every row needs the image's id", path)
        key = image_id(raw_id)
        value = (row.get(columns[sex_key]) or "").strip()
        allowed = "M or F" if sex_key == "sex" else "true/false or 1/0"
        try:
            sex = Sex.parse(value)
        except InputError:
            raise InputError(f"line {line}: {sex_key} {value!r} for id {key!r} is not "
                             f"{allowed}", path) from None
        if sexes.setdefault(key, sex) is not sex:
            raise InputError(f"line {line}: id {key!r} is given both sexes, M and F", path)
    return sexes


def check_sex_ids(sexes: Mapping[str, object], paths: Iterable, source: str | os.PathLike = "--sex-from") -> None:
    """Refuse a sex CSV whose ids do not all name one of the input images: such a row is a
    typo or the wrong CSV, and would otherwise silently leave some images with no sex.

    Raises:
        InputError: naming (up to five of) the ids that match no input.
    """
    ids = {image_id(p) for p in paths}
    unmatched = sorted(k for k in sexes if k not in ids)
    if unmatched:
        shown = ", ".join(repr(k) for k in unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        raise InputError(f"{len(unmatched)} id(s) in the sex CSV match no input image: {shown}; "
                         "ids must be the image file names without extension", source)


# --- decoding ahead ------------------------------------------------------------------------

def _decode(path: str) -> LoadedImage | BoneAgeError:
    try:
        return read_image(path)
    except BoneAgeError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - see below
        # Decoders meet arbitrary bytes: a file that makes one raise something unforeseen is
        # a bad file, to be reported in its row, not a reason to stop a batch of thousands.
        return InputError(f"cannot decode image: {type(exc).__name__}: {exc}", path)


def prefetch_images(paths: Iterable[str], workers: int = 2,
                    window: int | None = None) -> Iterator[tuple[str, LoadedImage | BoneAgeError]]:
    """``(path, image or the error reading it)`` in the order of ``paths``, each decoded in
    a pool of ``workers`` threads up to ``window`` images (default ``2 * workers``) ahead
    of the consumer, so reading and decoding overlap the model's work on the current image
    while memory stays bounded."""
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    window = max(1, window or 2 * workers)
    todo = iter(paths)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="boneage-decode")
    try:
        pending: deque = deque()
        for path in todo:
            pending.append((path, pool.submit(_decode, path)))
            if len(pending) >= window:
                break
        while pending:
            path, future = pending.popleft()
            following = next(todo, None)
            if following is not None:
                pending.append((following, pool.submit(_decode, following)))
            yield path, future.result()
    finally:
        # A consumer that stops early (an exception, Ctrl-C) must not wait for the window.
        pool.shutdown(wait=False, cancel_futures=True)


# --- one record per file -------------------------------------------------------------------

def _months(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _one_line(text: str) -> str:
    # Every row is one line, so a half-written last line is simply one without its newline.
    return " ".join(str(text).split())


@dataclass
class FileResult:
    """What became of one input file: a prediction, or the error that stopped it (a
    :class:`~boneage.errors.QualityRefusal` when the quality gate refused it)."""

    path: str
    prediction: Prediction | None = None
    error: BoneAgeError | None = None
    sex: Sex | None = None
    """The sex used (None when none was known and the model does not use it)."""
    sex_source: str = "none"
    """Where the sex came from: ``"argument"``, ``"csv"``, ``"dicom"`` or ``"none"``."""

    @property
    def refused(self) -> bool:
        return isinstance(self.error, QualityRefusal)

    @property
    def failed(self) -> bool:
        """Unreadable or bad input (refusals are not failures)."""
        return self.error is not None and not self.refused

    def row(self) -> dict[str, str]:
        """The results-CSV row (:data:`RESULT_COLUMNS`), every value one line of text."""
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(id=image_id(self.path), path=self.path, sex="" if self.sex is None else str(self.sex),
                   sex_source=self.sex_source)
        p = self.prediction
        if p is not None:
            row["bone_age_months"] = _months(p.bone_age_months)
            row["maturity"] = p.maturity or ""
            if p.interval is not None:
                row.update(interval_low_months=_months(p.interval.low_months),
                           interval_high_months=_months(p.interval.high_months),
                           interval_level=f"{p.interval.level:g}")
            if p.clinical is not None:
                c = p.clinical.to_dict()
                row.update(chronological_age_months=_months(c["chronological_age_months"]),
                           age_source=c["age_source"],
                           z_score="" if c["z_score"] is None else f"{c['z_score']:.2f}",
                           impression=c["impression"] or c["statement"])
            if p.quality is not None:
                row["quality"] = p.quality.label
                row["quality_reason"] = p.quality.reason or "; ".join(p.quality.corrections)
        elif self.refused:
            row.update(quality="refused", quality_reason=self.error.reason)
        elif self.error is not None:
            problem = getattr(self.error, "problem", None)
            # The row names the file already; keep the message's own path only if it differs.
            same = getattr(self.error, "path", None) == self.path
            row["error"] = problem if same and problem else str(self.error)
        return {k: _one_line(v) for k, v in row.items()}


# --- the results CSV -----------------------------------------------------------------------

class ResultsCSV:
    """The ``--out`` CSV: one row per image, appended and flushed one at a time.

    Opening an existing file resumes it: its rows are kept (:meth:`previous` finds them by
    path) and new rows are appended under the one header. A last line without its newline is
    what a run killed mid-write leaves; it is cut off (and its image assessed again).

    Raises:
        InputError: the file exists but is not a results CSV of these columns.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # Insertion-ordered: the file's order, which forget() keeps when it rewrites the file.
        self._rows: dict[str, dict[str, str]] = {}
        self._file = None
        self.repaired = False
        """True when a half-written last line was cut off."""
        if self.path.is_dir():
            raise InputError("is a folder; give --out a CSV file name", self.path)
        if self.path.exists():
            self._load()

    @staticmethod
    def _key(path: str | os.PathLike) -> str:
        return os.path.abspath(os.fspath(path))

    def _load(self) -> None:
        data = self.path.read_bytes()
        keep = data[:data.rfind(b"\n") + 1]  # everything up to the last complete line
        try:
            lines = keep.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise InputError("exists and is not a boneage results CSV (not UTF-8 text); "
                             "give another --out or remove it", self.path) from None
        foreign = InputError(f"exists with other columns than a boneage results CSV "
                             f"({', '.join(RESULT_COLUMNS)}); give another --out or remove it",
                             self.path)
        if lines and tuple(next(csv.reader([lines[0]]), [])) != RESULT_COLUMNS:
            raise foreign
        if not lines and data and not ",".join(RESULT_COLUMNS).encode().startswith(data):
            raise foreign  # one line, no newline: cut it only if it is our half-written header
        for number, line in enumerate(lines[1:], start=2):
            fields = next(csv.reader([line]), [])
            if len(fields) != len(RESULT_COLUMNS):
                raise InputError(f"line {number} has {len(fields)} fields, not {len(RESULT_COLUMNS)}; "
                                 "the file is not a complete boneage results CSV", self.path)
            row = dict(zip(RESULT_COLUMNS, fields))
            self._rows[self._key(row["path"])] = row
        if len(keep) != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(len(keep))
            self.repaired = True

    def previous(self, path: str | os.PathLike) -> dict[str, str] | None:
        """The row already written for ``path`` (relative paths are taken from the current
        folder), or None."""
        return self._rows.get(self._key(path))

    def forget(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove the rows of ``paths`` from the file (rewritten atomically, the other rows in
        their order), so that those images are assessed again; the number removed.

        A resumed run uses it for rows that ended in an error: a missing sex or an unreadable
        file is usually fixed before the rerun, which must not skip those images.
        """
        keys = {self._key(p) for p in paths} & set(self._rows)
        if not keys:
            return 0
        if self._file is not None:
            raise RuntimeError("forget() rewrites the file; call it before opening it for writing")
        for key in keys:
            del self._rows[key]
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self._rows.values())
        return len(keys)

    def __enter__(self) -> "ResultsCSV":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        if new:
            self._writer.writeheader()
            self._file.flush()
        return self

    def write(self, row: Mapping[str, str]) -> None:
        """Append one row and flush it, so a killed run loses at most the row being written."""
        self._writer.writerow({k: _one_line(row.get(k, "")) for k in RESULT_COLUMNS})
        self._file.flush()
        self._rows[self._key(row["path"])] = dict(row)

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
