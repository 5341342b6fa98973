"""The quality gate: is this a hand radiograph the model can read, the right way up?

Before a bone age is given, :func:`screen` checks, in order:

1. the DICOM header, when there is one (:func:`header_refusal`): CT, MR, ultrasound, ...
   objects, body parts that are not a hand, scout images, multi-frame objects;
2. colour: a photograph or colour drawing (channels that differ) is not a radiograph;
3. the pixels, in the bone-age model's own feature space (the pooled features of its
   backbone, one un-augmented view), with the :class:`QualityGate` stored in the model file:

   * *orientation and polarity*: a linear classifier over the 8 ways a radiograph can reach
     us (turned 0/90/180/270 degrees, normal or inverted), fitted on training radiographs
     turned and inverted. When it is sure (probability >= ``orientation_sure``) of a turn or
     an inversion, the image is corrected and the verdict says how; unsure, it is refused;
   * *is it a hand radiograph*: a linear classifier of training radiographs (in every
     orientation) against non-hand images: generated non-radiographs
     (:mod:`boneage.data.negatives`) and, in gates fitted with a folder of real radiographs of
     other body parts, those radiographs (one class per body part, so a refusal can say what
     the image looks like: :data:`BODY_PARTS`); and a Mahalanobis distance to the training
     radiographs (catching what no negative resembled), which a hand probability of at least
     ``distance_override`` outweighs (an unusual exposure of a hand is still a hand). Both
     thresholds are set on held-back radiographs so that about 99.5 % of them pass.

``force`` assesses a refused image anyway; the verdict then says it was forced and why the
gate would have refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from boneage.data.body_parts import BODY_PARTS, HAND
from boneage.errors import QualityRefusal
from boneage.transforms import make_views


@dataclass(frozen=True)
class QualityVerdict:
    """What the gate decided about one image before its bone age was given.

    ``accepted`` is False only for images assessed anyway with ``force``; ``corrections``
    says what was changed (``"inverted polarity corrected"``, ``"rotated 90° clockwise"``)
    and ``reason`` why the gate would have refused.
    """

    accepted: bool
    reason: str = ""
    corrections: tuple[str, ...] = ()
    scores: dict = field(default_factory=dict)
    forced: bool = False

    @property
    def label(self) -> str:
        """One word for tables: accepted, corrected or forced."""
        if self.forced:
            return "forced"
        return "corrected" if self.corrections else "accepted"

    def to_dict(self) -> dict:
        return {"verdict": self.label, "reason": self.reason, "corrections": list(self.corrections),
                "scores": {k: round(float(v), 4) for k, v in self.scores.items()}}


#: DICOM modalities that are projection radiographs (or captures of one): CR, DX, RG, and
#: OT (other: secondary captures of films). CT, MR, US, NM, PT, XC (photograph) ... are not.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "OT"})
#: A BodyPartExamined containing one of these may show a hand.
HAND_BODY_PARTS = ("HAND", "WRIST", "FINGER", "EXTREMITY", "ARM")
_MODALITY_NAMES = {"CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
                   "NM": "nuclear medicine", "PT": "PET", "MG": "mammography", "XC": "photograph",
                   "XA": "angiography", "RF": "fluoroscopy", "SR": "structured report"}


def header_refusal(metadata) -> str | None:
    """Why a DICOM header says the image is not a hand radiograph, or None.

    Missing tags pass: many exports drop them, and the pixels are checked anyway.
    """
    if metadata is None:
        return None
    if metadata.n_frames > 1:
        return f"a multi-frame DICOM object ({metadata.n_frames} frames), not one radiograph"
    modality = metadata.modality
    if modality and modality not in RADIOGRAPH_MODALITIES:
        kind = _MODALITY_NAMES.get(modality)
        return (f"DICOM Modality is {modality}" + (f" ({kind})" if kind else "")
                + f", not a radiograph ({', '.join(sorted(RADIOGRAPH_MODALITIES))})")
    part = metadata.body_part
    if part and not any(word in part for word in HAND_BODY_PARTS):
        return f"DICOM BodyPartExamined is {part}, not a hand or wrist"
    if "LOCALIZER" in metadata.image_type:
        return "DICOM ImageType says LOCALIZER (a scout image), not a radiograph"
    return None


#: Files whose colour channels differ by more than this (fraction of full scale, on average)
#: are colour pictures. Radiographs saved as RGB have equal channels (0); tinted scans of
#: films stay well below it.
MAX_COLOURFULNESS = 0.04

# --- orientation ---------------------------------------------------------------------------
#: The 8 ways an image can be turned and inverted; class k + 4 * inverted means "turned k
#: quarter turns counter-clockwise (np.rot90), then inverted if inverted".
ORIENTATIONS = tuple((k, inv) for inv in (False, True) for k in range(4))


def orient(image: np.ndarray, cls: int) -> np.ndarray:
    """``image`` turned and/or inverted as orientation class ``cls`` describes."""
    k, inverted = ORIENTATIONS[cls]
    out = np.rot90(image, k)
    return np.ascontiguousarray(1.0 - out if inverted else out, dtype=np.float32)


def undo_orientation(image: np.ndarray, cls: int) -> np.ndarray:
    """The upright, normal-polarity image of one that is in orientation ``cls``."""
    k, inverted = ORIENTATIONS[cls]
    out = 1.0 - image if inverted else image
    return np.ascontiguousarray(np.rot90(out, -k), dtype=np.float32)


def describe_correction(cls: int) -> tuple[str, ...]:
    """What undoing orientation ``cls`` did, in words (empty for upright and normal)."""
    k, inverted = ORIENTATIONS[cls]
    out = []
    if inverted:
        out.append("inverted polarity corrected (bone was dark)")
    if k:
        # np.rot90(k) turned it counter-clockwise; undoing turns it back clockwise.
        out.append({1: "turned 90° clockwise to upright", 2: "turned 180° to upright",
                    3: "turned 90° counter-clockwise to upright"}[k])
    return tuple(out)


# --- what a refused image looks like ------------------------------------------------------
# --- the gate ------------------------------------------------------------------------------
_ARRAYS = ("feature_mean", "feature_scale", "radiograph_w", "radiograph_b", "orientation_w",
           "orientation_b", "pca_components", "precision", "residual_scale")
TENSOR_PREFIX = "quality."


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class QualityGate:
    """Classifiers over a model's pooled features, and their thresholds (see module doc).

    Arrays: ``feature_mean``/``feature_scale`` (D,) standardise features; ``radiograph_w``
    (D,), ``radiograph_b`` () score radiograph vs not, or, with ``class_names``, ``radiograph_w``
    (C, D) and ``radiograph_b`` (C,) score the C classes (``class_names[0]`` is ``"hand"``, the
    others :data:`GENERATED` or a body part), softmax; ``orientation_w`` (8, D),
    ``orientation_b`` (8,) score the orientation classes; ``pca_components`` (K, D),
    ``precision`` (K, K) and ``residual_scale`` () give the distance to upright radiographs.
    """

    feature_mean: np.ndarray
    feature_scale: np.ndarray
    radiograph_w: np.ndarray
    radiograph_b: np.ndarray
    orientation_w: np.ndarray
    orientation_b: np.ndarray
    pca_components: np.ndarray
    precision: np.ndarray
    residual_scale: np.ndarray
    radiograph_min: float = 0.5
    """Refuse when P(radiograph) is below this."""
    distance_max: float = float("inf")
    """Refuse when the Mahalanobis distance (squared) exceeds this..."""
    distance_override: float = float("inf")
    """...unless the hand probability is at least this: a hand the classifier is sure of is
    not refused for an unusual exposure or border alone (``inf``: the distance always refuses)."""
    orientation_sure: float = 0.9
    """Correct a turn or inversion only when its probability is at least this."""
    class_names: tuple[str, ...] = ()
    """Classes of a multi-class ``radiograph_w`` (empty: one logistic score)."""
    looks_like_sure: float = 0.6
    """A refusal names the body part when, of the non-hand classes, it has this share."""
    facts: dict = field(default_factory=dict)
    """How the gate was fitted and what it measured (free-form, stored with it)."""

    def _z(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float64) - self.feature_mean) / self.feature_scale

    def class_probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, C) probabilities of ``class_names``; (N, 2) [hand, not] for a one-score gate."""
        z = self._z(features)
        if self.class_names:
            return _softmax(z @ self.radiograph_w.T + self.radiograph_b)
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ self.radiograph_w + self.radiograph_b, -50, 50)))
        return np.stack([p, 1.0 - p], axis=1)

    def radiograph_probability(self, features: np.ndarray) -> np.ndarray:
        """Probability that each image is a hand radiograph, (N,)."""
        return self.class_probabilities(features)[:, 0]

    def looks_like(self, probabilities: np.ndarray) -> str:
        """What a refused image looks like, from its mean class probabilities (C,): the body
        part's description when one non-hand class holds ``looks_like_sure`` of the non-hand
        probability and it is a body part, else ``""``."""
        if len(self.class_names) < 3:
            return ""
        rest = np.asarray(probabilities, np.float64)[1:]
        best = int(np.argmax(rest))
        name = self.class_names[1 + best]
        if name not in BODY_PARTS or rest[best] < self.looks_like_sure * max(rest.sum(), 1e-12):
            return ""
        return BODY_PARTS[name]

    def orientation_probabilities(self, features: np.ndarray) -> np.ndarray:
        return _softmax(self._z(features) @ self.orientation_w.T + self.orientation_b)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared distance to the upright training radiographs: Mahalanobis within their
        principal subspace plus the energy outside it, scaled so each of the D - K remaining
        dimensions counts like one of the K (a probabilistic-PCA-like score). The residual
        matters: what is unlike a radiograph mostly lies off the radiographs' subspace."""
        z = self._z(features)
        p = z @ self.pca_components.T
        residual = z - p @ self.pca_components
        off = z.shape[1] - self.pca_components.shape[0]
        return (np.einsum("nk,kl,nl->n", p, self.precision, p)
                + off * (residual ** 2).sum(1) / float(np.asarray(self.residual_scale).reshape(-1)[0]))

    # storage in a model file: tensors under "quality." and thresholds in the metadata
    def to_tensors(self) -> dict[str, np.ndarray]:
        """The gate's arrays under their tensor names, float32 (the model file's writer turns
        them into tensors)."""
        return {TENSOR_PREFIX + k: np.ascontiguousarray(getattr(self, k), np.float32) for k in _ARRAYS}

    def to_metadata(self) -> str:
        meta = {"radiograph_min": self.radiograph_min, "distance_max": self.distance_max,
                "orientation_sure": self.orientation_sure, "facts": self.facts}
        if np.isfinite(self.distance_override):  # files without it keep the distance's refusal
            meta["distance_override"] = self.distance_override
        if self.class_names:
            meta.update(class_names=list(self.class_names), looks_like_sure=self.looks_like_sure)
        return json.dumps(meta)

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> "QualityGate":
        """The gate from its arrays (float64) and its :meth:`to_metadata` fields."""
        names = tuple(meta.get("class_names", ()))
        w = arrays["radiograph_w"]
        if (w.ndim == 2) != bool(names) or (names and (len(names) != w.shape[0] or names[0] != HAND)):
            raise ValueError(f"the gate's classifier has shape {w.shape} but classes {list(names)}")
        return cls(**arrays, radiograph_min=meta["radiograph_min"], distance_max=meta["distance_max"],
                   distance_override=meta.get("distance_override", float("inf")),
                   orientation_sure=meta["orientation_sure"], class_names=names,
                   looks_like_sure=meta.get("looks_like_sure", 0.6), facts=meta.get("facts", {}))

    @classmethod
    def from_stored(cls, tensors: dict, metadata: str) -> "QualityGate":
        # numpy arrays (read with framework="np") or torch tensors alike
        arrays = {k: np.asarray(tensors[TENSOR_PREFIX + k], dtype=np.float64) for k in _ARRAYS}
        return cls.from_arrays(arrays, json.loads(metadata))


@dataclass(frozen=True)
class PixelScores:
    """The gate's scores for one image (before any correction, except ``distance``)."""

    radiograph: float
    distance: float
    orientation: int
    orientation_probability: float
    looks_like: str = ""
    """What the image looks like when it is not a hand (:meth:`QualityGate.looks_like`)."""


def image_features(predictor, images, preprocessed: bool = False) -> np.ndarray:
    """Pooled backbone features of one un-augmented view per image (after the recipe's
    preprocessing, unless ``preprocessed``, and its canonical stage), shape (N, D), from the
    predictor's ``features`` (PyTorch or onnxruntime alike)."""
    out = []
    batch = []

    def flush():
        # Streamed in batch_size groups, so calibrating on thousands of images never holds
        # all their views at once.
        out.append(predictor.features(np.stack(batch)))
        batch.clear()

    for image in images:
        image = np.asarray(image, np.float32)
        pre = image if preprocessed else predictor.preprocess(image)
        batch.append(make_views(pre, None, False, (), predictor._canonical)[0])
        if len(batch) == predictor.batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def remaining(h: int, c: int) -> int:
    """The orientation class left when correction ``c`` is undone from an image in
    orientation ``h`` (turns subtract, inversions cancel)."""
    (kh, ih), (kc, ic) = ORIENTATIONS[h], ORIENTATIONS[c]
    return ORIENTATIONS.index(((kh - kc) % 4, ih != ic))


#: _REMAIN[h, c] = remaining(h, c)
_REMAIN = np.array([[remaining(h, c) for c in range(8)] for h in range(8)])


def candidate_features(predictor, image: np.ndarray) -> np.ndarray:
    """Features of the image under each of the 8 corrections, shape (8, D): row ``c`` is
    :func:`undo_orientation` of the *preprocessed* image. Turning after preprocessing, not
    before, preprocesses a full-resolution radiograph once instead of 8 times (most of the
    gate's cost); the gate is fitted the same way (:func:`~boneage.evaluation.calibrate.orientation_stack`)."""
    pre = predictor.preprocess(np.asarray(image, np.float32))
    return image_features(predictor, [undo_orientation(pre, c) for c in range(len(ORIENTATIONS))],
                          preprocessed=True)


def scores_from_candidates(gate: QualityGate, feats: np.ndarray) -> PixelScores:
    """Scores of one image from the features of its 8 corrections.

    Orientation is a consensus: if the image is in orientation ``h``, undoing correction
    ``c`` leaves orientation ``remaining(h, c)``, which the classifier should see in row
    ``c``; the log-probabilities of all 8 rows add up, so one misleading view does not decide.
    The radiograph score is the mean over the 8 rows (a turned radiograph is still one), and
    so are the class probabilities that say what a non-hand looks like; the distance is that
    of the corrected image.
    """
    log_p = np.log(np.clip(gate.orientation_probabilities(feats), 1e-12, 1.0))   # (c, class)
    joint = log_p[np.arange(8)[None, :], _REMAIN].sum(axis=1)                     # (h,)
    post = _softmax(joint)
    h = int(np.argmax(post))
    classes = gate.class_probabilities(feats).mean(axis=0)
    return PixelScores(radiograph=float(classes[0]), distance=float(gate.distance(feats[h:h + 1])[0]),
                       orientation=h, orientation_probability=float(post[h]),
                       looks_like=gate.looks_like(classes))


#: An image as given whose one feature pass is this sure of a hand (and upright, and within
#: the distance) is accepted without the other 7 candidate passes. Chosen on the calibration
#: half of the bundled model's held-back images: the smallest round value at which the
#: decisions equal the 8-pass ones there (547 of 554 accepted either way; at the gate's own
#: threshold, 0.22, one more was accepted). On the test half and the xray-other held-out part
#: the decisions were then identical too, and 95 % of hands took the one-pass way
#: (docs/results.md, issue 31).
FAST_HAND_MIN = 0.5


def upright_hand_scores(gate: QualityGate, first: np.ndarray) -> PixelScores | None:
    """Scores from the features of the image as given alone (candidate 0), when they already
    accept it as an upright hand: hand probability >= ``FAST_HAND_MIN`` and the gate's own
    threshold, upright with the gate's ``orientation_sure``, within the distance. Else None:
    the 8-candidate consensus (:func:`scores_from_candidates`) decides."""
    first = np.asarray(first, np.float64)[None]
    hand = float(gate.class_probabilities(first)[0, 0])
    upright = float(gate.orientation_probabilities(first)[0, 0])
    distance = float(gate.distance(first)[0])
    if (hand >= max(FAST_HAND_MIN, gate.radiograph_min) and upright >= gate.orientation_sure
            and distance <= gate.distance_max):
        return PixelScores(radiograph=hand, distance=distance, orientation=0, orientation_probability=upright)
    return None


def gate_scores(gate: QualityGate, feats: np.ndarray) -> PixelScores:
    """What the gate decides on, from the features of an image's 8 candidate corrections
    (row 0 the image as given): :func:`upright_hand_scores` when row 0 settles it, else the
    consensus. :func:`score_pixels` computes rows 1-7 only when needed; calibration measures
    through this function, so its rates are the ones predictions get."""
    return upright_hand_scores(gate, feats[0]) or scores_from_candidates(gate, feats)


def score_pixels(gate: QualityGate, predictor, image: np.ndarray,
                 preprocessed: np.ndarray | None = None) -> tuple[PixelScores, np.ndarray]:
    """The gate's scores for one image and the image corrected to its likeliest orientation
    (``preprocessed``: the image's :meth:`~Predictor.preprocess`, when already computed).

    One feature pass decides an upright hand (most inputs); anything else gets the other 7
    candidate corrections and their consensus."""
    pre = predictor.preprocess(np.asarray(image, np.float32)) if preprocessed is None else preprocessed
    first = image_features(predictor, [pre], preprocessed=True)
    scores = upright_hand_scores(gate, first[0])
    if scores is None:
        rest = image_features(predictor, [undo_orientation(pre, c) for c in range(1, len(ORIENTATIONS))],
                              preprocessed=True)
        scores = scores_from_candidates(gate, np.concatenate([first, rest]))
    corrected = undo_orientation(image, scores.orientation) if scores.orientation else image
    return scores, corrected


def judge(gate: QualityGate, scores: PixelScores) -> tuple[str | None, tuple[str, ...]]:
    """``(refusal reason or None, corrections)`` from the scores."""
    looks = f"looks like a {scores.looks_like} radiograph, not a hand" if scores.looks_like else ""
    if scores.radiograph < gate.radiograph_min:
        return (f"{looks or 'does not look like a hand radiograph'} (hand score {scores.radiograph:.2f}, "
                f"needs >= {gate.radiograph_min:.2f})"), ()
    if scores.distance > gate.distance_max and scores.radiograph < gate.distance_override:
        # What it looks like is said only where the classifier doubts the hand: a hand refused
        # for its distance alone (an unusual exposure, a large border) is still a hand, and
        # "looks like a foot" would misdescribe it.
        looks = looks if scores.radiograph < 0.5 else ""
        return (f"{looks + ': ' if looks else ''}unlike the hand radiographs the model was trained "
                f"on (distance {scores.distance:.0f}, limit {gate.distance_max:.0f})"), ()
    if scores.orientation == 0:
        return None, ()
    described = describe_correction(scores.orientation)
    if scores.orientation_probability < gate.orientation_sure:
        return (f"orientation or polarity unsure (likeliest: {'; '.join(described)}, probability "
                f"{scores.orientation_probability:.2f}); turn or invert it, or pass --force"), ()
    return None, described


def screen(predictor, pixels, metadata=None, *, name: str | None = None, force: bool = False):
    """``(pixels to assess, QualityVerdict)`` for one image; raises
    :class:`~boneage.errors.QualityRefusal` unless ``force``.

    Without a gate in the model file only the header and colour checks run (the verdict's
    ``scores`` are then empty). A forced image is assessed as given, uncorrected.
    """
    pixels, verdict, _ = screen_keeping_preprocessed(predictor, pixels, metadata, name=name, force=force)
    return pixels, verdict


def screen_keeping_preprocessed(predictor, pixels, metadata=None, *, name: str | None = None,
                                force: bool = False):
    """:func:`screen`, and the recipe's preprocessing of the pixels to assess when the gate
    computed it (else None): ``(pixels, verdict, preprocessed)``. A prediction that follows
    reuses it instead of preprocessing a full-resolution radiograph a second time."""
    reason = header_refusal(metadata)
    if reason is None and metadata is not None and metadata.colourfulness > MAX_COLOURFULNESS:
        reason = (f"a colour image (colour channels differ by {metadata.colourfulness:.0%} on "
                  f"average), not a radiograph")
    scores_dict: dict = {}
    corrections: tuple[str, ...] = ()
    corrected, pre = pixels, None
    gate = getattr(predictor, "quality_gate", None)
    if reason is None and gate is not None:
        pre = predictor.preprocess(pixels)
        scores, corrected = score_pixels(gate, predictor, pixels, pre)
        scores_dict = {"radiograph": scores.radiograph, "distance": scores.distance,
                       "orientation_probability": scores.orientation_probability}
        reason, corrections = judge(gate, scores)
    if reason is not None:
        if not force:
            raise QualityRefusal(reason, name)
        return pixels, QualityVerdict(accepted=False, reason=reason, scores=scores_dict, forced=True), pre
    verdict = QualityVerdict(accepted=True, corrections=corrections, scores=scores_dict)
    # A corrected image is preprocessed again: turning the preprocessed copy is what the gate
    # compares, not exactly what preprocessing the turned radiograph gives.
    return (corrected, verdict, None) if corrections else (pixels, verdict, pre)
