"""Combining the predictions of several views (patches, flips) of one image."""

from __future__ import annotations

import numpy as np

from boneage.registry import Registry

#: How per-view predictions become one: ``fn(values, percentile) -> float``.
AGGREGATES: Registry = Registry("aggregate")


@AGGREGATES.register("mean")
def _mean(v: np.ndarray, percentile: float) -> float:
    return float(v.mean())


@AGGREGATES.register("median")
def _median(v: np.ndarray, percentile: float) -> float:
    return float(np.median(v))


@AGGREGATES.register("percentile")
def _percentile(v: np.ndarray, percentile: float) -> float:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    return float(np.percentile(v, percentile))


def aggregate(values, method: str = "median", percentile: float = 50.0) -> float:
    """One number from the per-view predictions: their mean, median or a percentile.

    The percentile uses linear interpolation (numpy's default), so ``percentile=50`` equals
    the median; a percentile tuned on a validation set corrects a systematic bias of patches.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot aggregate an empty set of predictions")
    return AGGREGATES.get(method)(v, percentile)


def tune_percentile(view_predictions: list[np.ndarray], truth, grid=None) -> tuple[float, float]:
    """The percentile of the per-view predictions that minimises MAE on a validation set.

    Returns ``(best_percentile, its_mae)``; ties go to the percentile closest to 50.
    """
    truth = np.asarray(truth, dtype=np.float64)
    if len(view_predictions) != truth.size or truth.size == 0:
        raise ValueError(f"need one prediction set per true age, got {len(view_predictions)} and {truth.size}")
    grid = np.arange(0, 101, 1.0) if grid is None else np.asarray(grid, dtype=np.float64)
    best = (50.0, float("inf"))
    for q in sorted(grid, key=lambda q: abs(q - 50.0)):
        preds = np.array([np.percentile(v, q) for v in view_predictions])
        err = float(np.mean(np.abs(preds - truth)))
        if err < best[1] - 1e-12:
            best = (float(q), err)
    return best
