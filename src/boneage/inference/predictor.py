"""Predict bone age from an image array or file with a trained model.

This module imports no PyTorch (import-linter checks it): :class:`Predictor` is everything but
the network, which its subclasses run: :class:`~boneage.inference.torch_predictor.TorchPredictor`
in PyTorch, :class:`~boneage.inference.onnx_model.OnnxPredictor` in onnxruntime (the light
install's, with the bundled ONNX model).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from boneage.clinical.reference import maturity_statement
from boneage.config import Recipe
from boneage.errors import InputError
from boneage.inference.aggregate import aggregate
from boneage.inference.quality import screen, screen_keeping_preprocessed
from boneage.sex import Sex
from boneage.transforms import build_pipeline, canonical_pipeline, make_views, preprocessed_copies
from boneage.units import rounded

if TYPE_CHECKING:
    from boneage.clinical import ClinicalReading
    from boneage.inference.interval import PredictionInterval
    from boneage.inference.quality import QualityVerdict

DEFAULT_MODEL_NAME = "default_model.safetensors"
#: The same model exported to ONNX (``boneage export``), with the same recipe, interval and
#: gate: what the light install, which has no PyTorch, predicts with.
DEFAULT_ONNX_NAME = "default_model.onnx"


def torch_available() -> bool:
    """Whether PyTorch can be imported (the ``train`` extra is installed)."""
    from importlib.util import find_spec

    try:
        return find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as none
        return False


def default_model_path(kind: str = "auto") -> Path:
    """The model bundled inside the package: ``"torch"`` the PyTorch model file, ``"onnx"``
    its ONNX export. ``"auto"`` is the ONNX file in every install: predicting with it needs no
    PyTorch import and runs several times faster on a CPU, and both give the same bone ages
    to 0.001 months (their hashes differ). What needs the network itself (Grad-CAM, training,
    calibration, export) asks for ``"torch"``, or reaches it through
    :func:`boneage.evaluation.gradcam.gradcam_predictor`."""
    if kind not in ("auto", "torch", "onnx"):
        raise ValueError(f"kind must be 'auto', 'torch' or 'onnx', got {kind!r}")
    if kind == "auto":
        kind = "onnx"
    name = DEFAULT_MODEL_NAME if kind == "torch" else DEFAULT_ONNX_NAME
    return Path(str(resources.files("boneage") / "assets" / name))


def require_torch(what: str, path: str | Path | None = None) -> None:
    """One-line :class:`~boneage.errors.InputError` when PyTorch is missing for ``what``."""
    if not torch_available():
        raise InputError(f"{what} needs PyTorch, which this installation lacks "
                         f"(pip install 'boneage[train]')", path)


def check_can_predict(recipe: Recipe, path: str | Path) -> None:
    """One-line :class:`~boneage.errors.InputError` naming ``path`` when its model cannot
    give bone ages: another task (a hand-mask or enhancement network) or no target scaling
    (a recipe that was never trained)."""
    if recipe.task != "regression":
        raise InputError(f"is a {recipe.task} model file, not a bone-age model; it cannot predict "
                         "bone ages", path)
    if recipe.target.mean is None or recipe.target.std is None:
        raise InputError("cannot predict: its recipe has no target scaling (the bone-age mean "
                         "and SD that training stores), so it is not a trained model", path)


@dataclass
class Prediction:
    """A bone age estimate: the aggregated value, the spread of the views behind it, and
    which model made it (name and the first 16 hex digits of the model file's SHA-256)."""

    bone_age_months: float
    sex: Sex
    spread_months: float     # standard deviation over patches / flips (0 for one view)
    n_views: int
    model_name: str = ""
    model_hash: str = ""
    clinical: ClinicalReading | None = None
    """The reading against chronological age, when the caller or the file gave an age."""
    interval: PredictionInterval | None = None
    """The calibrated prediction interval, when the model file carries a calibration."""
    quality: QualityVerdict | None = None
    """What the quality gate decided (None when the image did not pass through it)."""

    _NESTED = ("clinical", "interval", "quality")

    @property
    def maturity(self) -> str | None:
        """At the top of the Greulich–Pyle range, what to say instead of the precise bone age
        (``"at or near skeletal maturity: at least 15.3 years ..."``), else None; see
        :func:`boneage.clinical.reference.maturity_statement`."""
        return maturity_statement(self.bone_age_months, self.sex, self.interval)

    def bone_age_text(self) -> str:
        """The bone age for people: months and years, or the maturity statement at the top of
        the range (text output, report and page say it this way)."""
        months = self.bone_age_months
        return self.maturity or f"{months:.1f} months ({months / 12:.1f} years)"

    def to_dict(self) -> dict:
        """JSON-ready fields, months rounded to 0.01; ``clinical``, ``interval`` and
        ``quality`` only when present; ``maturity`` the statement at the top of the range, or
        None."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._NESTED}
        out.update(bone_age_months=rounded(self.bone_age_months), spread_months=rounded(self.spread_months))
        out["maturity"] = self.maturity
        for name in self._NESTED:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_dict()
        return out


class Predictor:
    """Runs a model on images exactly as its recipe says (preprocess, views, aggregate).

    This class holds everything but the network and imports no PyTorch; its subclasses run
    the network: :class:`~boneage.inference.torch_predictor.TorchPredictor` (a PyTorch model
    file or module) and :class:`~boneage.inference.onnx_model.OnnxPredictor` (an ONNX
    export, the light install's). :func:`boneage.inference.loader.load_predictor` picks one
    for a file.
    """

    def __init__(self, recipe: Recipe, batch_size: int = 64, info: dict | None = None,
                 quality_gate=None, calibration=None):
        self._setup(recipe, batch_size, info, quality_gate, calibration)

    def _setup(self, recipe: Recipe, batch_size: int, info: dict | None, quality_gate, calibration) -> None:
        """Everything but the network, shared by the subclasses."""
        self.recipe = recipe
        self.batch_size = batch_size
        self.info = info or {}
        self.quality_gate = quality_gate
        """:class:`~boneage.inference.quality.QualityGate` of the model file, or None."""
        self.calibration = calibration
        """:class:`~boneage.inference.interval.ConformalCalibration` of the model file, or None."""
        self.gradcam_predictor = None
        """The PyTorch predictor Grad-CAM differentiates for this one, once loaded
        (:func:`boneage.evaluation.gradcam.gradcam_predictor`); None until then."""
        self._pre = build_pipeline(recipe.preprocess)
        self._pre_variants = [build_pipeline(steps) for steps in recipe.inference.preprocess_views]
        self._canonical = canonical_pipeline(recipe)
        if recipe.target.mean is None or recipe.target.std is None:
            raise ValueError("recipe has no target scaling; was the model trained?")

    @property
    def uses_sex(self) -> bool:
        """Whether the network reads the sex (a model without a sex branch predicts the same
        for both)."""
        raise NotImplementedError

    @property
    def gradcam_unavailable(self) -> str | None:
        """Why Grad-CAM cannot explain this predictor's estimates, or None when it can."""
        return None

    def screen(self, image: np.ndarray, metadata=None, *, name: str | None = None,
               force: bool = False) -> tuple[np.ndarray, QualityVerdict]:
        """The quality gate (see :mod:`boneage.inference.quality`): ``(pixels to assess,
        verdict)``, the pixels corrected when the gate turned or inverted them. Raises
        :class:`~boneage.errors.QualityRefusal` unless ``force``."""
        return screen(self, np.asarray(image, dtype=np.float32), metadata, name=name, force=force)

    def screen_keeping_preprocessed(self, image: np.ndarray, metadata=None, *, name: str | None = None,
                                    force: bool = False) -> tuple[np.ndarray, QualityVerdict, np.ndarray | None]:
        """:meth:`screen`, and the preprocessed pixels when the gate computed them (else None),
        for :meth:`predict`'s ``preprocessed``."""
        return screen_keeping_preprocessed(self, np.asarray(image, dtype=np.float32), metadata,
                                           name=name, force=force)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The recipe's deterministic preprocessing of a [0, 1] image."""
        return self._pre(np.asarray(image, dtype=np.float32))

    def preprocess_all(self, image: np.ndarray) -> list[np.ndarray]:
        """:meth:`preprocess` and the copies of ``inference.preprocess_views``: every
        distinct preprocessed copy the model sees, the recipe's own first."""
        return preprocessed_copies(image, self._pre, self._pre_variants)

    def views_of_preprocessed(self, preprocessed: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Every view the model sees of an already preprocessed image (patches, TTA
        rotations, flips), after the canonical preparation, shape (V, h, w); given a list
        (:meth:`preprocess_all`), the views of each copy in turn."""
        if not isinstance(preprocessed, np.ndarray):
            return np.concatenate([self.views_of_preprocessed(p) for p in preprocessed])
        r = self.recipe
        return make_views(preprocessed, (r.patches.n, r.patches.size) if r.patches else None,
                          r.inference.flip_tta, r.inference.tta_angles, self._canonical,
                          r.inference.tta_border)

    def views(self, image: np.ndarray) -> np.ndarray:
        """Every view the model sees of a raw [0, 1] image, shape (V, h, w)."""
        return self.views_of_preprocessed(self.preprocess_all(image))

    def _run(self, views: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Bone age in months for a stack of views with one sex flag (1 = male) per view."""
        raise NotImplementedError

    def features(self, views: np.ndarray) -> np.ndarray:
        """Pooled backbone features of views (V, h, w) in [0, 1], shape (V, D) (what the
        quality gate reads), in batches of ``batch_size``."""
        raise NotImplementedError

    def predict_views(self, image: np.ndarray, sex: Sex | str,
                      preprocessed: np.ndarray | None = None) -> np.ndarray:
        """Bone age in months for each view (patch and/or flip) of a raw [0, 1] image;
        ``preprocessed``, its :meth:`preprocess` when already computed, is used instead of
        preprocessing it again (unless the recipe adds copies of its own,
        ``inference.preprocess_views``)."""
        if preprocessed is None or self._pre_variants:
            views = self.views(image)
        else:
            views = self.views_of_preprocessed(preprocessed)
        return self._run(views, np.full(len(views), Sex.parse(sex).flag, np.float32))

    def _settle_sex(self, sex) -> Sex:
        settled = Sex.parse_optional(sex)
        if settled is None:
            if self.uses_sex:
                raise InputError("sex is unknown, and this model needs it (M or F)")
            settled = Sex.FEMALE  # ignored by a model without the sex branch
        return settled

    @staticmethod
    def _check_array(image) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"expected a 2-D grayscale image, got shape {image.shape}")
        return image

    def _result(self, per_view: np.ndarray, sex: Sex) -> Prediction:
        value = float(self.aggregate(per_view))
        return Prediction(bone_age_months=value, sex=sex,
                          spread_months=float(per_view.std()), n_views=int(per_view.size),
                          model_name=self.recipe.name, model_hash=self.info.get("model_sha256", "")[:16],
                          interval=self.calibration.interval(value) if self.calibration else None)

    def predict(self, image: np.ndarray, sex: str | bool | None,
                preprocessed: np.ndarray | None = None) -> Prediction:
        """Bone age of one radiograph given as a 2-D float array in [0, 1]; ``preprocessed``,
        the image's :meth:`preprocess` when already computed (by the quality gate), is used
        instead of preprocessing it again."""
        sex_n = self._settle_sex(sex)
        return self._result(self.predict_views(self._check_array(image), sex_n, preprocessed), sex_n)

    def predict_batch(self, images, sexes) -> list[Prediction]:
        """Bone ages of several radiographs, their views batched together; each result equals
        :meth:`predict` of that image alone (same views, TTA and aggregation)."""
        images, sexes = list(images), list(sexes)
        if len(images) != len(sexes):
            raise InputError(f"got {len(images)} images but {len(sexes)} sexes")
        settled = [self._settle_sex(s) for s in sexes]
        per_view = self.per_view_preprocessed([self.preprocess_all(self._check_array(im)) for im in images],
                                              settled)
        return [self._result(m, s) for m, s in zip(per_view, settled)]

    def per_view_preprocessed(self, preprocessed, sexes) -> list[np.ndarray]:
        """Bone age in months of every view of each already preprocessed image, or of each
        list of copies (:meth:`preprocess_all`); what validation and batch evaluation use on
        their cached images."""
        settled = [self._settle_sex(s) for s in sexes]
        stacks = [self.views_of_preprocessed(p) for p in preprocessed]
        if not stacks:
            return []
        male = np.concatenate([np.full(len(v), s.flag, np.float32) for v, s in zip(stacks, settled)])
        months = self._run(np.concatenate(stacks), male)
        return np.split(months, np.cumsum([len(v) for v in stacks])[:-1])

    def aggregate(self, per_view: np.ndarray) -> float:
        """One bone age from the per-view estimates, as the recipe says."""
        inf = self.recipe.inference
        return aggregate(per_view, inf.aggregate, inf.percentile)
