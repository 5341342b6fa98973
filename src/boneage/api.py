"""The Python API: what the ``boneage`` commands do, as functions.

>>> from boneage import api
>>> result = api.predict("hand.dcm")                 # sex from the DICOM tag
>>> result = api.predict("hand.png", sex="F")
>>> result = api.predict("hand.png", sex="F", age_months=96)   # result.clinical: the reading
>>> summary = api.evaluate("data/rsna-100px", holdout=True)

``model`` may be a model file path, a loaded :class:`~boneage.inference.Predictor`, or None
for the bundled model. Images may be file paths, :class:`~boneage.io.LoadedImage` s or 2-D
arrays in [0, 1]. Errors about what the caller gave are :class:`~boneage.errors.BoneAgeError`
s with one-line messages.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from boneage.clinical import clinical_reading, resolve_chronological_age
from boneage.errors import BoneAgeError, InputError, QualityRefusal, SexUnknown
from boneage.inference import Prediction, Predictor, default_model_path, loader
from boneage.inference.files import FileResult, check_sex_ids, image_id, prefetch_images, read_sex_csv
from boneage.io import LoadedImage, read_image
from boneage.reporting.report import HEATMAP_NOT_ASKED, BoneAgeReport, build_report, patient_fields
from boneage.sex import Sex
from boneage.visualize import HEATMAP_METHODS

ImageLike = "str | os.PathLike | LoadedImage | np.ndarray"


def load_predictor(model: str | os.PathLike | Predictor | None = None, device: str = "cpu",
                   threads: int | None = None) -> Predictor:
    """A Predictor for a model file (the bundled model for None); a Predictor passes through.

    A ``.onnx`` file (``boneage export``) runs in onnxruntime with ``threads`` intra-op
    threads, default 1 (one per concurrent request, so parallel requests do not thrash); for
    a PyTorch file ``threads`` sets ``torch.set_num_threads`` and None keeps PyTorch's default.
    """
    if isinstance(model, Predictor):
        return model
    return loader.load_predictor(model, device=device, threads=threads)


def _read(image, sex, predictor: Predictor, name: str):
    """Pixels of any image-like input, its sex (the argument, else the file's tag) and the
    file's metadata (None for arrays)."""
    metadata = None
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, LoadedImage):
        metadata = image.metadata
        pixels = image.pixels
    else:
        pixels = np.asarray(image, dtype=np.float32)
    settled = Sex.parse_optional(sex) or (metadata.sex if metadata is not None else None)
    if settled is None:
        if predictor.uses_sex:
            raise SexUnknown(name)
        settled = Sex.FEMALE  # ignored by a model without the sex branch
    return pixels, settled, metadata


def predict(image, sex=None, *, model=None, birth_date=None, study_date=None,
            age_months=None, force: bool = False) -> Prediction:
    """Bone age of one radiograph (path, LoadedImage or array).

    When a chronological age is known, from ``birth_date`` and ``study_date`` (dates or
    ``"YYYY-MM-DD"`` / ``"YYYYMMDD"``), ``age_months``, or the DICOM tags, in that order, the
    result's ``clinical`` holds the reading against it (see :mod:`boneage.clinical`);
    otherwise it is None. Bad ages or dates are an InputError before the model runs.

    The quality gate runs first: an image that is not a hand radiograph the model can read
    raises :class:`~boneage.errors.QualityRefusal` (``force=True`` assesses it anyway, and
    the result's ``quality`` says so); an inverted or turned radiograph the gate is sure of
    is corrected and ``quality.corrections`` says how.
    """
    predictor = load_predictor(model)
    name = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
    pixels, settled, verdict, age, pre = _screened(image, sex, predictor, name, force, birth_date=birth_date,
                                                  study_date=study_date, age_months=age_months)
    return _with_reading(predictor.predict(pixels, settled, preprocessed=pre), verdict, settled, age)


def _screened(image, sex, predictor: Predictor, name: str, force: bool, **ages):
    """What :func:`predict` does before the model: read, settle sex, resolve the age (bad
    ones fail before any work), run the quality gate. ``(pixels, sex, verdict, age,
    preprocessed pixels or None)``."""
    pixels, settled, metadata = _read(image, sex, predictor, name)
    try:
        age = resolve_chronological_age(**ages, metadata=metadata)
    except InputError as exc:
        # Say which image: with several on one command line the bare reason is ambiguous.
        raise InputError(exc.problem, exc.path or name) from None
    pixels, verdict, pre = predictor.screen_keeping_preprocessed(pixels, metadata, name=name, force=force)
    return pixels, settled, verdict, age, pre


def _with_reading(prediction: Prediction, verdict, sex, age) -> Prediction:
    """The prediction with the gate's verdict and, when an age is known, the clinical reading."""
    prediction = replace(prediction, quality=verdict)
    if age is not None:
        prediction = replace(prediction, clinical=clinical_reading(prediction.bone_age_months, sex, age))
    return prediction


def predict_batch(images: Sequence, sexes: Sequence | None = None, *, model=None,
                  force: bool = False, age_months: Sequence | None = None) -> list[Prediction]:
    """Bone ages of several radiographs, their views batched through the model; each result
    equals :func:`predict` of that image alone (quality gate, clinical reading included).

    ``age_months`` gives each image's chronological age (None entries: the file's DICOM tags,
    if any). A refused image raises :class:`~boneage.errors.QualityRefusal` for the whole
    batch unless ``force``; :func:`predict_files` goes on past bad files instead.
    """
    predictor = load_predictor(model)
    images = list(images)
    sexes = list(sexes) if sexes is not None else [None] * len(images)
    ages = list(age_months) if age_months is not None else [None] * len(images)
    if len(sexes) != len(images):
        raise InputError(f"got {len(images)} images but {len(sexes)} sexes")
    if len(ages) != len(images):
        raise InputError(f"got {len(images)} images but {len(ages)} ages (age_months)")
    screened = [_screened(image, sex, predictor,
                          str(image) if isinstance(image, (str, os.PathLike)) else f"<image {i}>",
                          force, age_months=age)
                for i, (image, sex, age) in enumerate(zip(images, sexes, ages))]
    batch = predictor.predict_batch([s[0] for s in screened], [s[1] for s in screened])
    return [_with_reading(p, verdict, sex, age) for p, (_, sex, verdict, age, _) in zip(batch, screened)]


def evaluate(data_dir=None, *, csv=None, images=None, model=None, holdout: bool = False,
             limit: int | None = None, out=None, progress: bool = False) -> dict:
    """MAE and friends of a model on a labelled folder (``labels.csv`` + ``images/``) or CSV.

    ``holdout`` keeps only the images the model held back in training (by their stored ids);
    ``out`` also writes ``predictions.csv``, ``summary.json`` and plots there.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    # boundary: PyTorch (batched evaluation); predicting, which the light install does, needs none.
    from boneage.evaluation.labelled import evaluate_labelled

    # Batched evaluation runs the PyTorch network over cached views: the bundled model's own
    # file, not the ONNX export that single predictions use.
    predictor = load_predictor(default_model_path("torch") if model is None else model)
    return evaluate_labelled(predictor, data_dir, csv=csv, images=images, holdout=holdout,
                             limit=limit, out=out, progress=progress)


def _gradcam():
    """The heat-map module, :mod:`boneage.evaluation.gradcam`."""
    # boundary: PyTorch, only when a heat map is asked for; predictions never need it.
    from boneage.evaluation import gradcam

    return gradcam


def explain(image, sex=None, *, model=None, out=None, title: str | None = None, method: str = "gradcam"):
    """Prediction and heat map of one radiograph: ``(prediction, heatmap, image)``, the map
    lying on the radiograph as given, at its own size and aspect ratio (see
    :func:`boneage.evaluation.gradcam.heatmap_to_original`); ``out`` (a .png) also writes
    the overlay. ``method``: ``"gradcam"`` or ``"cam"`` (exact class activation maps, see
    :func:`boneage.evaluation.gradcam.cam_decomposition`)."""
    if method not in HEATMAP_METHODS:
        raise InputError(f"unknown heat-map method {method!r}; choose one of {', '.join(HEATMAP_METHODS)}")
    gradcam = _gradcam()
    predictor = load_predictor(model)
    name = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
    pixels, settled, _ = _read(image, sex, predictor, name)
    prediction, heat, pre = gradcam.explain_image(predictor, pixels, settled, method=method)
    if out is not None:
        label = f"{Path(name).name}: " if name != "<image>" else ""
        shown = "Grad-CAM" if method == "gradcam" else "CAM"
        gradcam.overlay_heatmap(pre, heat, Path(out), title=title or f"{label}bone age {prediction.bone_age_text()}, "
                                                              f"sex {prediction.sex}; {shown}")
    return prediction, heat, pre


def predict_files(paths, sex=None, *, sex_from=None, model=None, force: bool = False,
                  birth_date=None, study_date=None, age_months=None, workers: int = 2):
    """Assess many image files, one :class:`~boneage.inference.files.FileResult` per path, in
    the order given, going on past files that cannot be read or are refused.

    Each prediction equals :func:`predict` of that file. The next files are read and decoded
    in ``workers`` threads while the model runs (see
    :func:`~boneage.inference.files.prefetch_images`). Sex: ``sex`` for every image, else
    ``sex_from`` (a CSV path, see :func:`~boneage.inference.files.read_sex_csv`, or a mapping
    ``{image id: sex}``), else the DICOM tag; each result says which. Ages and dates apply to
    every image, as for :func:`predict`.

    Returns a generator; what can be checked before any image is read (the model, the sex
    CSV and whether its ids match the paths) is checked on the call and raises InputError.
    Folders and glob patterns: expand them first with
    :func:`~boneage.inference.files.expand_inputs`.
    """
    paths = [os.fspath(p) for p in paths]
    given = Sex.parse_optional(sex)
    if sex_from is None:
        per_image: dict = {}
    elif isinstance(sex_from, (str, os.PathLike)):
        per_image = read_sex_csv(sex_from)
        check_sex_ids(per_image, paths, sex_from)
    else:
        per_image = {str(k): Sex.parse(v, f" for id {k!r} in sex_from") for k, v in sex_from.items()}
    predictor = load_predictor(model)
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")

    def named(exc: BoneAgeError, path: str) -> BoneAgeError:
        # predict() sees a decoded image, not a path: put the file's name on its errors.
        if getattr(exc, "path", None) not in (None, "<image>"):
            return exc
        if isinstance(exc, QualityRefusal):
            return QualityRefusal(exc.reason, path)
        if isinstance(exc, SexUnknown):
            return SexUnknown(path, exc.how)
        if isinstance(exc, InputError):
            return InputError(exc.problem, path)
        return exc

    def run():
        for path, loaded in prefetch_images(paths, workers):
            chosen, source = (given, "argument") if given is not None else (
                (per_image[image_id(path)], "csv") if image_id(path) in per_image else (None, "none"))
            if isinstance(loaded, BoneAgeError):
                yield FileResult(path, error=named(loaded, path), sex=chosen, sex_source=source)
                continue
            if chosen is None and loaded.metadata.sex is not None:
                source = "dicom"
            try:
                prediction = predict(loaded, chosen, model=predictor, force=force, birth_date=birth_date,
                                     study_date=study_date, age_months=age_months)
            except BoneAgeError as exc:
                yield FileResult(path, error=named(exc, path), sex=chosen or loaded.metadata.sex,
                                 sex_source=source)
                continue
            yield FileResult(path, prediction, sex=prediction.sex if source != "none" else None,
                             sex_source=source)

    return run()


def create_report(image, sex=None, *, model=None, birth_date=None, study_date=None,
                  age_months=None, force: bool = False, name: str | None = None,
                  source=None, report_date: datetime.datetime | None = None,
                  heatmap: bool = False, patient_id: str | None = None,
                  accession: str | None = None) -> BoneAgeReport:
    """Read, screen, predict and explain one radiograph, and build its report.

    Arguments as for :func:`predict` (``image``: a path or a
    :class:`~boneage.io.LoadedImage`; ``name`` names it in messages and in the report;
    ``source``: the file a LoadedImage was read from, whose DICOM header gives the patient's
    name and accession number, which LoadedImage does not keep; ``patient_id`` and
    ``accession`` put those on the report instead of the file's tags, e.g. for a PNG, which
    has none). They go into the report only, never into a log or message.
    ``heatmap``: add a Grad-CAM heat map, computed on the pixels the model assessed (after
    any correction by the quality gate) and carried back to their full size and aspect ratio.
    Off by default: it needs the PyTorch network (loaded only then), and on real radiographs
    its hottest area may lie on background, which a reader could take for what the model
    looked at.

    Raises:
        InputError: an unreadable image, bad dates or ages, unknown sex.
        QualityRefusal: the quality gate refused the image (``force=True`` assesses it).
    """
    path = image if isinstance(image, (str, os.PathLike)) else source
    label = str(name or path or "<image>")
    loaded = read_image(image) if isinstance(image, (str, os.PathLike)) else image
    if not isinstance(loaded, LoadedImage):
        raise TypeError(f"image must be a path or a LoadedImage, got {type(image).__name__}")
    predictor = load_predictor(model)
    try:
        prediction = predict(loaded, sex, model=predictor, birth_date=birth_date,
                                 study_date=study_date, age_months=age_months, force=force)
    except QualityRefusal as exc:  # name the file, not "<image>"
        raise QualityRefusal(exc.reason, label) from None
    except SexUnknown as exc:
        raise SexUnknown(label if exc.path in (None, "<image>") else exc.path, exc.how) from None
    except InputError as exc:
        raise InputError(exc.problem, label if exc.path in (None, "<image>") else exc.path) from None
    # The pixels the model assessed: the gate may have inverted or turned them, and the map
    # must lie on what was assessed. It passed (or was forced) just above, so force=True here
    # only repeats that decision without raising.
    pixels, _ = predictor.screen(loaded.pixels, loaded.metadata, name=label, force=True)
    missing = predictor.gradcam_unavailable if heatmap else HEATMAP_NOT_ASKED
    heat, background = None, pixels
    if missing is None:
        _, heat, background = _gradcam().explain_image(predictor, pixels, prediction.sex)
    if Sex.parse_optional(sex) is not None:
        sex_source = "given"
    elif loaded.metadata.sex is not None:
        sex_source = "DICOM PatientSex"
    else:
        sex_source = "not used by this model"
    logging.getLogger("boneage.reporting").debug("report built for %s: bone age %.1f months", label, prediction.bone_age_months)
    patient = patient_fields(path, loaded.metadata)
    given = {"patient_id": patient_id, "accession_number": accession}
    patient.update({key: text for key, text in ((k, " ".join(str(v or "").split())) for k, v in given.items())
                    if text})
    return build_report(loaded, prediction, heat, pixels=background, sex_source=sex_source,
                        name=Path(label).name, patient=patient, report_date=report_date,
                        heatmap_missing=missing)
