"""Evaluation: error metrics and diagnostic plots for bone age predictions (months)."""

from boneage.evaluation.metrics import (
    DEFAULT_AGE_BINS_MONTHS,
    format_summary,
    mae,
    mae_by_age_bin,
    mae_by_sex,
    mean_error,
    rmse,
    summarize,
)
from boneage.evaluation.plots import (
    plot_bland_altman,
    plot_error_by_age_bin,
    plot_pred_vs_true,
)

__all__ = [
    "DEFAULT_AGE_BINS_MONTHS",
    "mae",
    "rmse",
    "mean_error",
    "mae_by_sex",
    "mae_by_age_bin",
    "summarize",
    "format_summary",
    "plot_pred_vs_true",
    "plot_bland_altman",
    "plot_error_by_age_bin",
]
