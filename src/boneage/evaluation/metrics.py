"""Error metrics for bone age predictions, in months.

Everything here is plain numpy and accepts lists or arrays. Inputs are checked up front
(empty, length mismatch, NaN/inf, non-numeric) because a silently-NaN MAE in a report is
far more expensive to track down than an error that names the problem. Errors are
:class:`boneage.errors.InputError`, which is a ``ValueError``.

Age bins are half-open ``[low, high)`` intervals on the *true* age, except that values
below the first edge fall into the first bin and values at or above the second-to-last
edge fall into the last bin, so every sample is counted exactly once.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from boneage.errors import InputError

__all__ = [
    "DEFAULT_AGE_BINS_MONTHS",
    "mae",
    "rmse",
    "mean_error",
    "mae_by_sex",
    "mae_by_age_bin",
    "paired_mae_difference",
    "AGE_BANDS_YEARS",
    "errors_by_band",
    "summarize",
    "format_summary",
]

DEFAULT_AGE_BINS_MONTHS: tuple[int, ...] = (0, 24, 60, 120, 180, 240)
#: Lower edges (years) of the age bands where a model's error is judged clinically: early
#: childhood, the middle years a pull towards the mean reads too old, puberty, late puberty
#: and the years near skeletal maturity (the last band is open).
AGE_BANDS_YEARS: tuple[int, ...] = (0, 5, 10, 13, 15)


# --------------------------------------------------------------------------- validation


def _as_vector(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D float array, or raise InputError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, got {type(values).__name__} ({exc})") from None
    # Models often emit shape (N, 1); accept that, but not genuinely 2-D data, which would
    # otherwise be flattened into nonsense pairings.
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty; need at least one value")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), "
            f"first at index {first}"
        )
    return arr


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_vector(pred, "pred")
    t = _as_vector(true, "true")
    if p.shape != t.shape:
        raise InputError(f"length mismatch: pred has {p.size} values, true has {t.size}")
    return p, t


def _as_male_mask(male: Any, n: int) -> np.ndarray:
    """Return ``male`` as a bool mask of length ``n``.

    Only bools or 0/1 numbers are accepted: ``np.asarray(["M", "F"]).astype(bool)`` is all
    True, so coercing arbitrary values would silently put everyone in the male group.
    """
    arr = np.asarray(male)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"male must be 1-D, got shape {arr.shape}")
    if arr.size != n:
        raise InputError(f"length mismatch: male has {arr.size} values, pred/true have {n}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        if not np.isin(arr, (0, 1)).all():
            raise InputError("male must be booleans or 0/1; found other values (NaN, 2, ...)")
        return arr.astype(bool)
    raise InputError(f"male must be booleans or 0/1, got values of dtype {arr.dtype}")


def _check_bins(bins: Sequence[float]) -> np.ndarray:
    try:
        edges = np.asarray(bins, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"bins must be numeric bin edges, got {bins!r}") from None
    if edges.ndim != 1 or edges.size < 2:
        raise InputError(f"bins must list at least two edges, got {bins!r}")
    if not np.isfinite(edges).all():
        raise InputError(f"bins contain non-finite edges: {bins!r}")
    if not (np.diff(edges) > 0).all():
        raise InputError(f"bins must be strictly increasing, got {bins!r}")
    return edges


def _num(x: float) -> int | float:
    """Render a bin edge as an int when it is whole, so labels read "0-24" not "0.0-24.0"."""
    x = float(x)
    return int(x) if x.is_integer() else x


# --------------------------------------------------------------------------- metrics


def mae(pred: Any, true: Any) -> float:
    """Mean absolute error ``mean(|pred - true|)`` in the input's units (months)."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


def rmse(pred: Any, true: Any) -> float:
    """Root mean squared error ``sqrt(mean((pred - true)**2))``."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mean_error(pred: Any, true: Any) -> float:
    """Mean signed error ``mean(pred - true)`` (bias): positive means over-estimation."""
    p, t = _pair(pred, true)
    return float(np.mean(p - t))


def mae_by_sex(pred: Any, true: Any, male: Any) -> dict[str, float | None]:
    """MAE split by sex.

    Args:
        pred, true: ages in months.
        male: bool (or 0/1) per sample; True for male.

    Returns:
        ``{"male": float | None, "female": float | None}``; a group with no samples is None.
    """
    p, t = _pair(pred, true)
    m = _as_male_mask(male, p.size)
    err = np.abs(p - t)
    return {
        "male": float(err[m].mean()) if m.any() else None,
        "female": float(err[~m].mean()) if (~m).any() else None,
    }


def _bin_index(true: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per sample by true age, clipped so out-of-range ages land in an end bin."""
    # searchsorted(side="right") - 1 gives half-open [low, high) membership.
    idx = np.searchsorted(edges, true, side="right") - 1
    return np.clip(idx, 0, edges.size - 2)


def mae_by_age_bin(
    pred: Any, true: Any, bins: Sequence[float] = DEFAULT_AGE_BINS_MONTHS
) -> list[dict]:
    """MAE per age bin, binned by *true* age.

    Args:
        pred, true: ages in months.
        bins: increasing bin edges. Bins are ``[low, high)``; ages below the first edge go
            in the first bin and ages at or above the last edge go in the last bin.

    Returns:
        One dict per bin, in order:
        ``{"bin": "0-24", "low": 0, "high": 24, "n": int, "mae": float | None}``
        (``mae`` is None for an empty bin).
    """
    p, t = _pair(pred, true)
    edges = _check_bins(bins)
    idx = _bin_index(t, edges)
    err = np.abs(p - t)
    rows = []
    for i in range(edges.size - 1):
        sel = idx == i
        n = int(sel.sum())
        low, high = _num(edges[i]), _num(edges[i + 1])
        rows.append(
            {
                "bin": f"{low}-{high}",
                "low": low,
                "high": high,
                "n": n,
                "mae": float(err[sel].mean()) if n else None,
            }
        )
    return rows


def errors_by_band(pred: Any, true: Any, male: Any,
                   bands_years: Sequence[float] = AGE_BANDS_YEARS) -> list[dict]:
    """MAE and mean signed error (estimate - truth) per age band of the *true* age and sex.

    ``bands_years`` are increasing lower edges in years; the last band is open above.
    Returns one row per sex (female first) and band:
    ``{"sex": "F", "band": "5-10", "n": int, "mae": float | None, "bias": float | None}``
    (None for an empty band).
    """
    p, t = _pair(pred, true)
    m = _as_male_mask(male, p.size)
    lower = _check_bins([*bands_years, float(bands_years[-1]) + 1.0])[:-1]
    # Ages below the first edge count in the first band; the last band has no upper edge.
    idx = np.clip(np.searchsorted(lower, t / 12.0, side="right") - 1, 0, lower.size - 1)
    rows = []
    for sex, mask in (("F", ~m), ("M", m)):
        for i in range(lower.size):
            sel = mask & (idx == i)
            n = int(sel.sum())
            low = _num(lower[i])
            band = f"{low}+" if i == lower.size - 1 else f"{low}-{_num(lower[i + 1])}"
            err = p[sel] - t[sel]
            rows.append({"sex": sex, "band": band, "n": n,
                         "mae": float(np.abs(err).mean()) if n else None,
                         "bias": float(err.mean()) if n else None})
    return rows


def paired_mae_difference(pred: Any, pred_ref: Any, true: Any, *, n_boot: int = 2000,
                          level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """MAE(pred) - MAE(pred_ref) on the same images, with a paired bootstrap interval.

    Both models are scored on the same resampled images in every bootstrap round, so the
    interval reflects how much the difference depends on which images happened to be in the
    validation set: an interval that contains 0 means the set cannot tell the models apart.
    It says nothing about training noise (another seed), which a single run cannot measure.

    Returns ``{"diff", "low", "high"}`` in months; negative means ``pred`` is better.
    """
    p, t = _pair(pred, true)
    r, _ = _pair(pred_ref, true)
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    per_image = np.abs(p - t) - np.abs(r - t)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_image.size, size=(n_boot, per_image.size))
    boots = per_image[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return {"diff": float(per_image.mean()), "low": float(low), "high": float(high)}


def summarize(
    pred: Any,
    true: Any,
    male: Any = None,
    bins: Sequence[float] = DEFAULT_AGE_BINS_MONTHS,
) -> dict:
    """All headline metrics in one JSON-serialisable dict.

    Returns:
        ``{"n", "mae", "rmse", "bias", "mae_male", "mae_female", "by_age_bin"}`` with plain
        Python ints/floats/None. ``mae_male``/``mae_female`` are None when ``male`` is not
        given or the group is empty.
    """
    p, t = _pair(pred, true)
    by_sex = mae_by_sex(p, t, male) if male is not None else {"male": None, "female": None}
    return {
        "n": int(p.size),
        "mae": mae(p, t),
        "rmse": rmse(p, t),
        "bias": mean_error(p, t),
        "mae_male": by_sex["male"],
        "mae_female": by_sex["female"],
        "by_age_bin": mae_by_age_bin(p, t, bins),
    }


def _fmt(x: float | None, width: int = 8) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{x:>{width}.2f}"


def format_summary(summary: dict) -> str:
    """Render a :func:`summarize` result as a plain-text table for terminals.

    Missing keys and None values show as ``-`` so partial summaries still print.
    """
    lines = [f"Bone age error (months), n = {summary.get('n', '-')}"]
    overall = [
        ("MAE", summary.get("mae")),
        ("RMSE", summary.get("rmse")),
        ("Bias (pred - true)", summary.get("bias")),
    ]
    # Without sex information both rows would be dashes; leave them out instead.
    if summary.get("mae_male") is not None or summary.get("mae_female") is not None:
        overall += [("MAE male", summary.get("mae_male")), ("MAE female", summary.get("mae_female"))]
    label_w = max(len(k) for k, _ in overall)
    for key, value in overall:
        lines.append(f"  {key:<{label_w}}  {_fmt(value)}")

    rows = summary.get("by_age_bin") or []
    if rows:
        bin_w = max(len("Age bin"), *(len(str(r.get("bin", ""))) for r in rows))
        lines.append("")
        lines.append(f"  {'Age bin':<{bin_w}}  {'n':>6}  {'MAE':>8}")
        lines.append(f"  {'-' * bin_w}  {'-' * 6}  {'-' * 8}")
        for r in rows:
            lines.append(f"  {str(r.get('bin', '')):<{bin_w}}  {r.get('n', 0):>6}  {_fmt(r.get('mae'))}")
    return "\n".join(lines)
