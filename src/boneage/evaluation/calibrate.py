"""Calibrate a trained model file: its prediction interval and its quality gate.

``boneage calibrate DATA_DIR --model M --out M2`` runs :func:`calibrate_model_file`. It
needs the labelled folder the model was trained on, because both parts must be fitted on
radiographs the model did not train on: the model's held-back images (their ids are stored
in the file) are split, by a seeded draw, into a *calibration* half (fits the interval and
sets the gate's thresholds) and a *test* half (only measured: the coverage and acceptance
written into the file and reported). The gate's classifiers are fitted on training images
(features of radiographs the backbone has seen are what it will see of new ones) and on
generated non-radiographs (:mod:`boneage.data.negatives`, the fit variants only); the test
variants are only measured.

``--negatives DIR`` adds real radiographs of other body parts (``labels.csv``: ``id,body_part``):
a seeded draw, stratified by body part, fits the gate on one part of them (each image as
stored and in ``negatives_augment`` random crops and preparations) and only measures the other
(:func:`~boneage.data.negatives.split_body_parts`). The classifier then has one class per body
part besides hands and generated images, so a refusal can say what the image looks like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneage.data.datasets import PreprocessedCache
from boneage.data.labels import load_samples
from boneage.data.negatives import (
    FIT_VARIANTS, TEST_VARIANTS, negative_set, read_body_part_folder, split_body_parts,
)
from boneage.data.split import holdout_subset
from boneage.errors import InputError
from boneage.evaluation.robustness import PREPARATIONS, PrepContext, model_grid
from boneage.inference.batch import predict_cached
from boneage.inference.interval import coverage, fit_conformal
from boneage.inference.loader import load_predictor
from boneage.inference.predictor import default_model_path
from boneage.data.body_parts import GENERATED, HAND
from boneage.inference.quality import (
    ORIENTATIONS, _REMAIN, QualityGate, gate_scores, image_features, judge, orient, scores_from_candidates,
)
from boneage.inference.torch_model import add_to_model_file
from boneage.io import read_image
from boneage.transforms import functional as F

log = logging.getLogger(__name__)

#: Preparations a radiograph may arrive in, drawn at random for the gate's radiographs, so a
#: blurred, compressed or framed radiograph is not mistaken for a non-radiograph.
GATE_PREPARATIONS = ("as_stored", "as_stored", "shrink_area", "blur", "sharpen", "noise",
                     "jpeg_q50", "gamma_0.7", "gamma_1.4", "border_black", "border_white",
                     "pad_square", "marker", "rotate_+10", "rotate_-10")


#: The gate's hand-or-not classifiers (:attr:`CalibrationSettings.classifier`).
GATE_CLASSIFIERS = ("logistic", "lda")


@dataclass
class CalibrationSettings:
    """What :func:`calibrate_model_file` fits and how much data it uses."""

    level: float = 0.9
    bands: int = 3
    n_fit_radiographs: int = 1200
    fit_all_under_months: float = 36.0
    """Every training hand with a bone age below this joins the gate's fit radiographs, besides
    the ``n_fit_radiographs`` drawn at random (0: none). Hands under 3 years are 2 % of the
    RSNA training set, about 25 of a random 1,200: fitted so, the hand class accepted 69 % of
    unseen training hands under 2 years; fitted with all of them, 93 %, with no more negatives
    let through (cross-validated, docs/results.md, issue 31)."""
    negatives_per_variant: int = 60
    accept_quantile: float = 0.995
    """Share of held-back radiographs the gate's thresholds let through."""
    orientation_sure: float = 0.9
    distance_override: float = 0.5
    """A hand probability that outweighs the distance (:attr:`QualityGate.distance_override`).
    0.5 lies between the two groups of the bundled model's calibration half: the hands
    refused for their distance alone score 0.63-0.99, the negatives beyond it at most 0.19.
    Fitted without legs, the gate lets 24 of 90 such unseen legs through without it; with it,
    the logistic gate none more and the LDA gate 2 (docs/results.md, issue 31)."""
    pca_components: int = 32
    classifier: str = "logistic"
    """The hand-or-not classifier: ``"logistic"`` (multinomial logistic regression, L2 with
    ``logistic_c``, classes weighted equally) or ``"lda"`` (the linear discriminant it
    replaced, issue 31)."""
    logistic_c: float = 0.01
    seed: int = 0
    negatives: str | None = None
    """A folder of real radiographs that are not hands (``labels.csv``: ``id,body_part``)."""
    negatives_test_fraction: float = 0.5
    """Share of each body part's images only measured, never fitted on."""
    negatives_augment: int = 6
    """Random crops/preparations of each fit-part negative, besides the image as stored."""


def _prepare(images, rng, workdir, grid: int):
    out = []
    for image in images:
        name = GATE_PREPARATIONS[int(rng.integers(len(GATE_PREPARATIONS)))]
        ctx = PrepContext(grid=grid, rng=np.random.default_rng(int(rng.integers(1 << 31))), workdir=workdir)
        out.append(np.clip(PREPARATIONS.get(name).apply(image, ctx), 0, 1).astype(np.float32))
    return out


def augment_negative(image: np.ndarray, rng: np.random.Generator, workdir, grid: int) -> np.ndarray:
    """One random variant of a real non-hand radiograph, brought to the model's working grid
    as the training hands were: a crop keeping 50-100 % of each side (a radiograph framed
    otherwise, a part of a joint), a mirror half the time, a shrink to the grid by nearest
    neighbour or area averaging (the hands of a 100-px set are nearest-neighbour copies, those
    of a full-resolution file area-shrunk: neither may tell hands from the rest), then one of
    the preparations the gate's hands get (:data:`GATE_PREPARATIONS`)."""
    h, w = image.shape
    ch, cw = max(16, int(h * rng.uniform(0.5, 1.0))), max(16, int(w * rng.uniform(0.5, 1.0)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = F.resample(np.ascontiguousarray(out), grid, "nearest" if rng.random() < 0.5 else "area")
    name = GATE_PREPARATIONS[int(rng.integers(len(GATE_PREPARATIONS)))]
    ctx = PrepContext(grid=grid, rng=np.random.default_rng(int(rng.integers(1 << 31))), workdir=workdir)
    return np.clip(PREPARATIONS.get(name).apply(out, ctx), 0, 1).astype(np.float32)


def _read_all(samples, progress: bool, what: str):
    it = samples
    if progress:
        from tqdm import tqdm
        it = tqdm(samples, desc=f"read {what}", unit="image", leave=False, disable=None)
    return [read_image(s.path).pixels for s in it]


def orientation_stack(predictor, images, progress: bool = False, what: str = "") -> np.ndarray:
    """Features of every orientation of every image, shape (N, 8, D): row ``k`` is
    :func:`~boneage.inference.quality.orient` of the preprocessed image (as the gate sees it). Any correction of any turned
    copy is one of these rows, so fitting and measuring need no further forward passes."""
    pre = [predictor.preprocess(np.asarray(im, np.float32)) for im in images]
    it = range(len(ORIENTATIONS))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"features {what}".strip(), unit="orientation", leave=False, disable=None)
    return np.stack([image_features(predictor, [orient(p, k) for p in pre], preprocessed=True) for k in it],
                    axis=1)


def candidates_of(stack: np.ndarray, h: int) -> np.ndarray:
    """The (N, 8, D) candidate-correction features of the images turned into orientation
    ``h``, from their orientation stack (see :func:`scores_from_candidates`)."""
    return stack[:, _REMAIN[h]]


def fit_gate(radiographs: np.ndarray, negatives: np.ndarray, calibration: np.ndarray,
             settings: CalibrationSettings, real: tuple[np.ndarray, list[str]] | None = None) -> QualityGate:
    """Fit the gate on orientation stacks (:func:`orientation_stack`) of training
    radiographs, generated negatives and, when ``real`` is given (``(stacks (M, 8, D), body
    part of each)``), real radiographs of other body parts; set its thresholds on held-back
    radiographs' stacks (``calibration``), never fitted on, so that ``accept_quantile`` of
    them pass.

    The classifier is linear over hands, generated images and each body part, on every
    orientation of every image: a multinomial logistic regression (``settings.classifier``,
    classes weighted equally) or a linear discriminant (shared covariance shrunk by
    Ledoit–Wolf, equal priors). Both give one weight row per class, which the gate applies
    with a softmax. Chosen by cross-validation on the fit part of xray-other: the logistic
    regression let through fewer negatives with fewer hands refused (docs/results.md)."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    if settings.classifier not in GATE_CLASSIFIERS:
        names = " or ".join(map(repr, GATE_CLASSIFIERS))
        raise ValueError(f"classifier must be {names}, got {settings.classifier!r}")
    n, k, d = radiographs.shape
    pos = radiographs.reshape(n * k, d)
    orient_labels = np.tile(np.arange(k), n)
    # Many features are (nearly) constant on radiographs (a quarter vary by < 1e-4): dividing
    # by their spread would blow any small deviation up, so no scale is below the median.
    std = pos.std(0)
    mean, scale = pos.mean(0), np.maximum(std, np.median(std)) + 1e-9
    z_pos = (pos - mean) / scale
    classes = [HAND, GENERATED]
    blocks, labels = [z_pos, (negatives.reshape(-1, d) - mean) / scale], [0, 1]
    if real is not None:
        stacks, parts = real
        for part in sorted(set(parts)):
            rows = stacks[np.asarray(parts) == part].reshape(-1, d)
            blocks.append((rows - mean) / scale)
            labels.append(len(classes))
            classes.append(part)
    y = np.concatenate([np.full(len(b), label) for b, label in zip(blocks, labels)])
    if settings.classifier == "lda":
        clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(len(classes), 1 / len(classes)))
    else:
        clf = LogisticRegression(C=settings.logistic_c, max_iter=1000, class_weight="balanced")
    clf.fit(np.concatenate(blocks), y)
    if len(classes) == 2:  # sklearn gives one score, the log-odds of class 1, for two classes
        class_w = np.stack([-clf.coef_[0], np.zeros(d)])
        class_b = np.array([-clf.intercept_[0], 0.0])
    else:
        class_w, class_b = clf.coef_, clf.intercept_
    orient_clf = LogisticRegression(C=0.1, max_iter=3000)
    orient_clf.fit(z_pos, orient_labels)
    upright = z_pos[orient_labels == 0]
    # leave at least one dimension outside the subspace for the residual term
    k_pca = max(1, min(settings.pca_components, d - 1, len(upright) - 1))
    pca = PCA(k_pca, random_state=settings.seed).fit(upright)
    precision = LedoitWolf().fit(pca.transform(upright)).precision_
    centred = upright - pca.mean_
    residual = centred - (centred @ pca.components_.T) @ pca.components_
    # PCA centres and the gate's distance does not: the stored mean includes PCA's centre, so
    # the gate's z is z - pca.mean_, and the classifiers' biases absorb that shift.
    gate = QualityGate(
        feature_mean=mean + pca.mean_ * scale, feature_scale=scale,
        radiograph_w=class_w, radiograph_b=class_b + class_w @ pca.mean_, class_names=tuple(classes),
        orientation_w=orient_clf.coef_, orientation_b=orient_clf.intercept_ + orient_clf.coef_ @ pca.mean_,
        pca_components=pca.components_, precision=precision,
        residual_scale=np.asarray((residual ** 2).sum(1).mean()),
        orientation_sure=settings.orientation_sure, distance_override=settings.distance_override)
    scores = [scores_from_candidates(gate, row) for row in candidates_of(calibration, 0)]
    q = settings.accept_quantile
    # never accept what the classifier calls more likely a non-radiograph than not
    gate.radiograph_min = float(min(0.5, np.quantile([s.radiograph for s in scores], 1 - q)))
    gate.distance_max = float(np.quantile([s.distance for s in scores], q))
    return gate


def refused_share(gate: QualityGate, stack: np.ndarray) -> float:
    """Share of the images of an orientation stack (as given) that the gate refuses."""
    return float(np.mean([judge(gate, gate_scores(gate, row))[0] is not None
                          for row in candidates_of(stack, 0)]))


def measure_gate(gate: QualityGate, radiographs: np.ndarray, negatives_by_variant: dict) -> dict:
    """From orientation stacks: acceptance of held-back radiographs as given, what happens
    to them in each of the 8 orientations (orientation right, ends upright and accepted,
    refused), and the share of negatives of each variant (or body part) that is refused."""
    per_class = {}
    for h in range(len(ORIENTATIONS)):
        scores = [gate_scores(gate, row) for row in candidates_of(radiographs, h)]
        verdicts = [judge(gate, s)[0] is None for s in scores]
        right = [s.orientation == h for s in scores]
        per_class[h] = {"orientation_right": float(np.mean(right)),
                        "upright_and_accepted": float(np.mean(np.logical_and(right, verdicts))),
                        "refused": 1.0 - float(np.mean(verdicts)),
                        "wrongly_corrected": float(np.mean([v and not r for v, r in zip(verdicts, right)]))}
    rejected = {variant: refused_share(gate, stack) for variant, stack in negatives_by_variant.items()}
    mean = lambda key: float(np.mean([r[key] for r in per_class.values()]))
    return {
        "accepted": 1.0 - per_class[0]["refused"], "n": int(len(radiographs)),
        "orientation_accuracy": mean("orientation_right"),
        "ends_upright_and_accepted": mean("upright_and_accepted"),
        "wrongly_corrected": mean("wrongly_corrected"),
        "per_orientation": {f"turn{ORIENTATIONS[c][0] * 90}{'_inverted' if ORIENTATIONS[c][1] else ''}": r
                            for c, r in per_class.items()},
        "rejected_per_variant": rejected,
        "rejected": float(np.mean(list(rejected.values()))) if rejected else float("nan"),
    }


def gate_data(predictor, fit, cal, test, settings: CalibrationSettings, grid: int, progress: bool = False,
              real_fit=(), real_test=(), fit_young=()) -> dict:
    """Orientation stacks of everything the gate is fitted, thresholded and measured on;
    ``real_fit`` and ``real_test`` are the two parts of the real non-hand radiographs
    (:class:`~boneage.data.negatives.BodyPartImage`), the fit part as stored and in
    ``settings.negatives_augment`` random variants each (:func:`augment_negative`).
    ``fit_young``: the youngest training hands (:attr:`CalibrationSettings.fit_all_under_months`),
    fitted on after ``fit``, each with a random preparation as those are."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        prng = np.random.default_rng(settings.seed + 1)
        fit_images = _prepare(_read_all(fit, progress, "radiographs"), prng, Path(tmp), grid)
        cal_images = _read_all(cal, progress, "calibration")
        cal_images = cal_images + _prepare(cal_images, prng, Path(tmp), grid)
        test_images = _read_all(test, progress, "test")
        test_prepared = _prepare(test_images, prng, Path(tmp), grid)
        # Its own generator: adding or dropping real negatives leaves the draws above as they were.
        nrng = np.random.default_rng([settings.seed, 31])
        real_images, real_parts = [], []
        for im, pixels in zip(real_fit, _read_all(real_fit, progress, "negatives")):
            real_images += [pixels] + [augment_negative(pixels, nrng, Path(tmp), grid)
                                       for _ in range(settings.negatives_augment)]
            real_parts += [im.body_part] * (1 + settings.negatives_augment)
        real_test_images = _read_all(real_test, progress, "negatives test")
        young_images = _prepare(_read_all(fit_young, progress, "youngest radiographs"),
                                np.random.default_rng([settings.seed, 36]), Path(tmp), grid)
    negatives = [im for _, im in negative_set(FIT_VARIANTS, settings.negatives_per_variant, seed=settings.seed)]
    unseen: dict[str, list] = {}
    for variant, im in negative_set(TEST_VARIANTS, max(1, settings.negatives_per_variant // 2), seed=settings.seed + 7):
        unseen.setdefault(variant, []).append(im)
    return {
        "fit": orientation_stack(predictor, fit_images + young_images, progress, "radiographs"),
        "negatives": orientation_stack(predictor, negatives, progress, "negatives"),
        "calibration": orientation_stack(predictor, cal_images, progress, "calibration"),
        "test": orientation_stack(predictor, test_images, progress, "test"),
        "test_prepared": orientation_stack(predictor, test_prepared, progress, "test prepared"),
        "unseen": {v: orientation_stack(predictor, ims) for v, ims in unseen.items()},
        "real_fit": (orientation_stack(predictor, real_images, progress, "negatives"), real_parts) if real_fit else None,
        "real_test": {part: orientation_stack(predictor, [p for im, p in zip(real_test, real_test_images)
                                                          if im.body_part == part])
                      for part in sorted({im.body_part for im in real_test})},
    }


def fit_and_measure_gate(data: dict, settings: CalibrationSettings, n_fit: int,
                         real_fit=(), real_test=(), n_young: int = 0) -> tuple[QualityGate, dict]:
    """The gate fitted on :func:`gate_data`'s stacks and what it measures on the parts it was
    not fitted on: ``(gate, facts)``, the facts :func:`calibrate_model_file` stores. Apart from
    the feature passes, so a design can be refitted and compared on stored stacks.
    ``real_fit``/``real_test``: the two parts of the real negatives, and ``n_young`` the number
    of youngest hands, as given to :func:`gate_data`."""
    gate = fit_gate(data["fit"], data["negatives"], data["calibration"], settings, data["real_fit"])
    measured = measure_gate(gate, data["test"], data["unseen"])
    prepared = measure_gate(gate, data["test_prepared"], {})
    gate_facts = {
        "accepted_test": measured["accepted"], "n_test": measured["n"],
        "accepted_test_prepared": prepared["accepted"],
        "rejected_test_negatives": measured["rejected"],
        "rejected_per_variant": measured["rejected_per_variant"],
        "orientation_accuracy": measured["orientation_accuracy"],
        "ends_upright_and_accepted": measured["ends_upright_and_accepted"],
        "wrongly_corrected": measured["wrongly_corrected"],
        "per_orientation": measured["per_orientation"],
        "radiograph_min": gate.radiograph_min, "distance_max": gate.distance_max,
        "distance_override": gate.distance_override,
        "classifier": settings.classifier,
        **({"logistic_c": settings.logistic_c} if settings.classifier == "logistic" else {}),
        "n_fit_radiographs": n_fit, "n_fit_youngest": n_young,
        "fit_all_under_months": settings.fit_all_under_months, "fit_negative_variants": list(FIT_VARIANTS),
        "test_negative_variants": list(TEST_VARIANTS), "classes": list(gate.class_names),
    }
    if real_test:
        per_part = {part: refused_share(gate, stack) for part, stack in data["real_test"].items()}
        counts = {part: sum(im.body_part == part for im in real_test) for part in per_part}
        gate_facts.update({
            "negatives_folder": Path(settings.negatives).name,
            "negatives_seed": settings.seed, "negatives_test_fraction": settings.negatives_test_fraction,
            "negatives_augment": settings.negatives_augment,
            "n_negatives_fit": len(real_fit), "n_negatives_test": len(real_test),
            "rejected_real_test": sum(per_part[p] * counts[p] for p in per_part) / len(real_test),
            "rejected_real_per_part": per_part,
            # which images were only measured: tests and later measurements must use these
            "negatives_test_ids": [im.id for im in real_test],
        })
    gate.facts = {k: gate_facts[k] for k in ("accepted_test", "rejected_test_negatives", "orientation_accuracy",
                                             "rejected_real_test") if k in gate_facts}
    return gate, gate_facts


def gate_fit_radiographs(train: list, settings: CalibrationSettings, rng: np.random.Generator) -> tuple[list, list]:
    """The training radiographs the gate's hand class is fitted on: ``(drawn, youngest)``,
    ``settings.n_fit_radiographs`` drawn at random (in their order in ``train``), then every
    other one with a bone age below ``settings.fit_all_under_months``. The youngest are kept
    apart so that the draw, and so every other random choice, is the same with or without them."""
    fit_idx = rng.choice(len(train), size=min(settings.n_fit_radiographs, len(train)), replace=False)
    drawn = [train[i] for i in sorted(fit_idx)]
    ids = {s.id for s in drawn}
    return drawn, [s for s in train if s.boneage < settings.fit_all_under_months and s.id not in ids]


def calibrate_model_file(data_dir, model=None, out=None, *, settings: CalibrationSettings | None = None,
                         csv=None, images=None, progress: bool = False) -> dict:
    """Fit the interval and the gate of ``model`` on the labelled folder it was trained on,
    measure them on the held-back images not used for fitting, and write the model file
    ``out`` with both (weights unchanged). Returns the measured facts."""
    settings = settings or CalibrationSettings()
    real_fit, real_test = [], []
    if settings.negatives is not None:  # a bad folder or split stops here, before any work
        real_fit, real_test = split_body_parts(read_body_part_folder(settings.negatives),
                                               settings.negatives_test_fraction, settings.seed,
                                               where=Path(settings.negatives) / "labels.csv")
    model_path = Path(model) if model else default_model_path("torch")
    predictor = load_predictor(model_path)
    samples = load_samples(data_dir, csv, images, None)
    held = holdout_subset(samples, predictor.recipe.data, predictor.info)
    if len(held) < 60:
        raise InputError(f"calibration needs at least 60 held-back images, the model has {len(held)}")
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(held))
    cal = [held[i] for i in sorted(order[: len(held) // 2])]
    test = [held[i] for i in sorted(order[len(held) // 2:])]
    held_ids = {s.id for s in held}
    train = [s for s in samples if s.id not in held_ids]
    fit, young = gate_fit_radiographs(train, settings, rng)

    log.info("interval: predicting %d held-back images", len(held))
    cache = PreprocessedCache(cal + test, predictor.recipe, progress=progress)
    preds, _ = predict_cached(predictor.model, predictor.recipe, cache, range(len(cal) + len(test)),
                              predictor.device, progress=progress)
    truth = np.array([s.boneage for s in cal + test], dtype=np.float64)
    nc = len(cal)
    calibration = fit_conformal(preds[:nc], truth[:nc], settings.level, settings.bands)
    test_cov = coverage(calibration, preds[nc:], truth[nc:])
    male = np.array([s.male for s in test])
    interval_facts = {
        "level": settings.level, "n_calibration": nc, "n_test": len(test), "coverage": test_cov,
        "coverage_calibration": coverage(calibration, preds[:nc], truth[:nc]),
        "coverage_male": coverage(calibration, preds[nc:][male], truth[nc:][male]),
        "coverage_female": coverage(calibration, preds[nc:][~male], truth[nc:][~male]),
        "half_widths": list(calibration.half_widths), "edges": list(calibration.edges), "seed": settings.seed,
    }
    log.info("interval: half-widths %s months, coverage %.3f on %d test images",
             [round(h, 1) for h in calibration.half_widths], test_cov, len(test))

    data = gate_data(predictor, fit, cal, test, settings, model_grid(predictor.recipe), progress,
                     real_fit, real_test, young)
    gate, gate_facts = fit_and_measure_gate(data, settings, len(fit), real_fit, real_test, len(young))
    facts = {"calibration": interval_facts, "quality_gate": gate_facts,
             "calibration_ids": [s.id for s in cal]}
    if out is not None:
        add_to_model_file(model_path, out, gate=gate, calibration=calibration, info_update=facts)
    return facts
