"""Calibrated prediction intervals: split-conformal on absolute residuals.

A model file may carry a :class:`ConformalCalibration` (fitted on held-back radiographs the
model did not train on). Every prediction then gets a :class:`PredictionInterval`: the bone
age plus or minus the calibrated quantile of absolute errors, for the band of predicted ages
it falls in (errors grow with age, so one width for all would be too wide for infants and too
narrow for adolescents).
"""

from __future__ import annotations

from dataclasses import dataclass


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
