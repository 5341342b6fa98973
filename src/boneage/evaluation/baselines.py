"""Classical (non-deep) bone age baselines: kNN and SVM regression on image features.

The SE-ResNet compression paper compares against Harmsen et al.'s kNN (k = 5) and RBF-kernel
SVM models (its table 3: MAE 12.00 and 9.96 months on RSNA). Those used hand-crafted,
content-based retrieval features; here the features are deliberately cheap and generic (a
down-sampled image plus global intensity statistics), so the numbers show what a model
without learned features achieves on the same data, not a reproduction of that paper.

Public API::

    image_features(pixels, size=32) -> 1-D feature vector
    with_sex(X, male) -> X with the sex column appended (the input fitted pipelines expect)
    fit_baseline(kind, X, y, male) -> fitted sklearn Pipeline
    run_baseline(kind, train_dir, eval_dir, *, size=32, limit=None) -> summary dict
    BASELINES
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from boneage.data.labels import load_samples
from boneage.errors import InputError
from boneage.evaluation.metrics import summarize
from boneage.io import read_image

__all__ = ["BASELINES", "image_features", "with_sex", "fit_baseline", "run_baseline"]

BASELINES: tuple[str, ...] = ("knn", "svm")
HIST_BINS = 16
KNN_NEIGHBOURS = 5  # the paper's best kNN setting


def _check_kind(kind: str) -> str:
    if kind not in BASELINES:
        raise InputError(f"unknown baseline {kind!r}; valid kinds: {', '.join(BASELINES)}")
    return kind


def image_features(pixels: np.ndarray, size: int = 32) -> np.ndarray:
    """Feature vector of one grayscale image in [0, 1].

    The image resized to ``size`` x ``size`` (OpenCV area interpolation, which averages
    rather than aliases) and flattened, followed by a 16-bin intensity histogram (fractions
    of pixels) and the mean, standard deviation and 10th/50th/90th percentiles of the
    full-resolution image. Length ``size**2 + 21``, float32.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    img = np.asarray(pixels, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {img.shape}")
    img = np.clip(img, 0.0, 1.0)
    small = cv2.resize(img, (int(size), int(size)), interpolation=cv2.INTER_AREA).ravel()
    hist, _ = np.histogram(img, bins=HIST_BINS, range=(0.0, 1.0))
    stats = [img.mean(), img.std(), *np.percentile(img, (10, 50, 90))]
    return np.concatenate([small, hist / img.size, stats]).astype(np.float32)


def with_sex(X: Any, male: Any) -> np.ndarray:
    """``X`` with a last column of 1 (male) / 0 (female): the input fitted baselines take."""
    X = np.asarray(X, dtype=np.float64)
    m = np.asarray(male, dtype=np.float64).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features), got shape {X.shape}")
    if m.shape[0] != X.shape[0]:
        raise ValueError(f"length mismatch: X has {X.shape[0]} rows, male has {m.shape[0]} values")
    return np.hstack([X, m[:, None]])


def fit_baseline(kind: str, X: Any, y: Any, male: Any) -> Pipeline:
    """Fit a classical regressor of bone age (months) on features ``X`` plus sex.

    ``kind`` is ``"knn"`` (k = 5 nearest neighbours, uniform weights) or ``"svm"`` (SVR
    with an RBF kernel). Both standardise the features first, so no single pixel dominates
    the distances. The SVR also standardises the target: its default ``C = 1`` caps each
    support vector's weight at 1, which on targets spanning some 200 months leaves it able
    to predict little more than the median; on unit-scale targets the defaults are sensible.

    The returned pipeline predicts from ``with_sex(X, male)``, not from ``X`` alone.
    """
    _check_kind(kind)
    Xs = with_sex(X, male)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != Xs.shape[0]:
        raise ValueError(f"length mismatch: X has {Xs.shape[0]} rows, y has {y.shape[0]} values")
    if Xs.shape[0] < 2:
        raise ValueError(f"need at least 2 training samples, got {Xs.shape[0]}")
    if kind == "knn":
        # A training set smaller than k would make predict() fail, not fit(); clamp instead.
        model = KNeighborsRegressor(n_neighbors=min(KNN_NEIGHBOURS, Xs.shape[0]))
    else:
        model = TransformedTargetRegressor(regressor=SVR(kernel="rbf"), transformer=StandardScaler())
    pipe = Pipeline([("scale", StandardScaler()), (kind, model)])
    return pipe.fit(Xs, y)


def _features(samples, size: int) -> np.ndarray:
    def one(sample) -> np.ndarray:
        return image_features(read_image(sample.path).pixels, size)

    # Decoding and resizing run in OpenCV, which releases the GIL, so threads overlap well.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(one, samples)))


def run_baseline(kind: str, train_dir: str | Path, eval_dir: str | Path, *, size: int = 32,
                 limit: int | None = None) -> dict:
    """Fit a baseline on one labelled folder and evaluate it on another.

    Both folders use the ``labels.csv + images/`` layout (:func:`boneage.data.labels.load_samples`);
    ``limit`` keeps the first N labelled images of each.

    Returns:
        :func:`boneage.evaluation.metrics.summarize` of the evaluation predictions, plus
        ``"method"`` (the kind), ``"n_train"`` and ``"size"``.
    """
    _check_kind(kind)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size must be a positive integer, got {size!r}")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    train = load_samples(train_dir, limit=limit)
    test = load_samples(eval_dir, limit=limit)
    if len(train) < 2:
        raise InputError(f"need at least 2 labelled training images, found {len(train)}", train_dir)
    model = fit_baseline(kind, _features(train, size), [s.boneage for s in train], [s.male for s in train])
    male = np.array([s.male for s in test])
    pred = model.predict(with_sex(_features(test, size), male))
    summary = summarize(pred, [s.boneage for s in test], male)
    return {"method": kind, **summary, "n_train": len(train), "size": size}
