"""Calibrated prediction intervals: split-conformal on absolute residuals.

A model file may carry a :class:`ConformalCalibration` (fitted on held-back radiographs the
model did not train on). Every prediction then gets a :class:`PredictionInterval`: the bone
age plus or minus the calibrated quantile of absolute errors, for the band of predicted ages
it falls in (errors grow with age, so one width for all would be too wide for infants and too
narrow for adolescents).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PredictionInterval:
    """``[low_months, high_months]`` holds the true bone age with probability ``level``
    (e.g. 0.9) for images like the calibration images."""

    low_months: float
    high_months: float
    level: float

    def to_dict(self) -> dict:
        return {"low_months": round(self.low_months, 2), "high_months": round(self.high_months, 2),
                "level": self.level}

    def __str__(self) -> str:
        return f"{self.level:.0%} interval {self.low_months:.1f}-{self.high_months:.1f} months"


@dataclass(frozen=True)
class ConformalCalibration:
    """Split-conformal half-widths of the interval, one per band of predicted age.

    ``edges`` are the inner band boundaries in months (ascending; ``[]`` for one band) and
    ``half_widths`` one more than them: a prediction ``p`` in band ``b`` gets
    ``[p - half_widths[b], p + half_widths[b]]``.
    """

    level: float
    edges: tuple[float, ...]
    half_widths: tuple[float, ...]
    n: tuple[int, ...] = ()
    """Calibration images per band."""

    def __post_init__(self):
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if len(self.half_widths) != len(self.edges) + 1:
            raise ValueError(f"need one half-width per band ({len(self.edges) + 1}), got {len(self.half_widths)}")
        if list(self.edges) != sorted(self.edges):
            raise ValueError(f"band edges must ascend, got {list(self.edges)}")

    def band(self, predicted_months: float) -> int:
        return int(np.searchsorted(np.asarray(self.edges), predicted_months, side="right"))

    def interval(self, predicted_months: float) -> PredictionInterval:
        """The calibrated interval around one predicted bone age (never below 0 months)."""
        h = self.half_widths[self.band(predicted_months)]
        return PredictionInterval(max(0.0, predicted_months - h), predicted_months + h, self.level)

    def to_dict(self) -> dict:
        return {"method": "split-conformal on absolute residuals, by band of predicted age",
                "level": self.level, "edges": list(self.edges), "half_widths": list(self.half_widths),
                "n": list(self.n)}

    @classmethod
    def from_dict(cls, d: dict) -> "ConformalCalibration":
        return cls(level=float(d["level"]), edges=tuple(float(e) for e in d["edges"]),
                   half_widths=tuple(float(h) for h in d["half_widths"]), n=tuple(int(n) for n in d.get("n", ())))


def conformal_quantile(residuals, level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) * level)-th smallest absolute residual,
    which covers a new exchangeable residual with probability >= ``level`` (infinite when
    n is too small for that level)."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    if r.size == 0:
        raise ValueError("need at least one residual to calibrate")
    k = int(np.ceil((r.size + 1) * level))
    return float("inf") if k > r.size else float(r[k - 1])


def fit_conformal(predicted, truth, level: float = 0.9, bands: int = 3) -> ConformalCalibration:
    """Calibrate on held-back images: ``bands`` bands of predicted age with equal numbers of
    images (their edges are quantiles of the predictions), each with its own quantile."""
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if predicted.shape != truth.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and truth must be equal-length 1-D, got {predicted.shape} and {truth.shape}")
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    if predicted.size < 10 * bands:
        raise ValueError(f"need at least {10 * bands} images for {bands} band(s), got {predicted.size}")
    edges = tuple(float(e) for e in np.quantile(predicted, np.arange(1, bands) / bands))
    which = np.searchsorted(np.asarray(edges), predicted, side="right")
    residuals = predicted - truth
    widths = tuple(conformal_quantile(residuals[which == b], level) for b in range(bands))
    return ConformalCalibration(level=level, edges=edges, half_widths=widths,
                                n=tuple(int((which == b).sum()) for b in range(bands)))


def coverage(calibration: ConformalCalibration, predicted, truth) -> float:
    """Share of images whose interval holds the truth."""
    hits = [iv.low_months <= t <= iv.high_months
            for iv, t in ((calibration.interval(p), t) for p, t in zip(np.asarray(predicted, float),
                                                                    np.asarray(truth, float)))]
    return float(np.mean(hits)) if hits else float("nan")
