"""Diagnostic plots for bone age predictions, written as PNG files.

Figures are built with :class:`matplotlib.figure.Figure` and rendered through
``FigureCanvasAgg`` directly, never through ``pyplot``: that keeps these functions usable
on headless training nodes and inside other programs without touching the global backend
or leaking figures into pyplot's registry (which would grow memory over a long training
run that plots every epoch).

Each function writes to a temporary file in the destination folder and then
``os.replace``-s it into place, so an interrupted run never leaves a truncated PNG that a
report or dashboard might pick up.

The training curves every run draws are :mod:`boneage.engine.curves`: the loop, which draws
them, sits below evaluation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.patches import Patch

from boneage.errors import InputError
from boneage.evaluation.metrics import (
    DEFAULT_AGE_BINS_MONTHS,
    _as_male_mask,
    _pair,
    mae_by_age_bin,
)
from boneage.visualize import display_size, new_figure, save_figure

__all__ = [
    "plot_pred_vs_true",
    "plot_bland_altman",
    "plot_error_by_age_bin",
    "plot_errors_by_band",
    "plot_robustness",
    "plot_mask_outlines",
]

# Colour-blind-safe pair (Okabe-Ito) so sex groups stay distinguishable for everyone.
_MALE_COLOUR = "#0072B2"
_FEMALE_COLOUR = "#D55E00"
_ALL_COLOUR = "#4D4D4D"


def plot_pred_vs_true(
    pred: Any,
    true: Any,
    path: str | os.PathLike,
    *,
    male: Any = None,
    title: str | None = None,
) -> Path:
    """Scatter of predicted vs true bone age with the identity line and MAE in the title.

    Args:
        pred, true: ages in months.
        path: PNG to write; parent folders are created.
        male: optional bool (or 0/1) per sample; when given, points are coloured by sex
            and the legend shows each group's MAE.
        title: optional first title line; the MAE line is always added.

    Returns:
        The written path.
    """
    p, t = _pair(pred, true)
    err = np.abs(p - t)
    fig = new_figure(6.0, 6.0)
    ax = fig.add_subplot()

    # Smaller, more transparent markers for big test sets so dense regions stay readable.
    size = 18 if p.size <= 500 else 6
    alpha = 0.8 if p.size <= 500 else 0.4
    if male is None:
        ax.scatter(t, p, s=size, alpha=alpha, color=_ALL_COLOUR, edgecolors="none")
    else:
        m = _as_male_mask(male, p.size)
        for mask, label, colour in ((m, "male", _MALE_COLOUR), (~m, "female", _FEMALE_COLOUR)):
            if mask.any():
                ax.scatter(
                    t[mask], p[mask], s=size, alpha=alpha, color=colour, edgecolors="none",
                    label=f"{label} (n={int(mask.sum())}, MAE {err[mask].mean():.2f})",
                )

    lo = float(min(p.min(), t.min()))
    hi = float(max(p.max(), t.max()))
    pad = max(1.0, 0.04 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--", label="identity")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("True bone age (months)")
    ax.set_ylabel("Predicted bone age (months)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    headline = f"MAE {err.mean():.2f} months (n={p.size})"
    ax.set_title(f"{title}\n{headline}" if title else f"Predicted vs true bone age\n{headline}")
    return save_figure(fig, path)


def plot_bland_altman(
    pred: Any,
    true: Any,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Bland-Altman plot: mean of (pred, true) vs difference ``pred - true``.

    Draws the bias (mean difference) and the 95% limits of agreement,
    ``bias ± 1.96 SD`` (sample SD; 0 when there is a single point).

    Returns:
        The written path.
    """
    p, t = _pair(pred, true)
    mean = (p + t) / 2.0
    diff = p - t
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    upper, lower = bias + 1.96 * sd, bias - 1.96 * sd

    fig = new_figure(7.0, 4.8)
    ax = fig.add_subplot()
    alpha = 0.8 if p.size <= 500 else 0.4
    ax.scatter(mean, diff, s=14, alpha=alpha, color=_ALL_COLOUR, edgecolors="none")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.axhline(bias, color="#0072B2", linewidth=1.5, label=f"bias {bias:+.2f}")
    ax.axhline(upper, color="#D55E00", linewidth=1.2, linestyle="--",
               label=f"+1.96 SD {upper:+.2f}")
    ax.axhline(lower, color="#D55E00", linewidth=1.2, linestyle="--",
               label=f"-1.96 SD {lower:+.2f}")
    # Keep the limit lines on screen even when all points sit close to the bias.
    span = max(abs(upper - bias), float(np.abs(diff - bias).max()), 1.0)
    ax.set_ylim(bias - 1.25 * span, bias + 1.25 * span)
    ax.set_xlabel("Mean of predicted and true bone age (months)")
    ax.set_ylabel("Predicted - true (months)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title or f"Bland-Altman (n={p.size}, SD {sd:.2f} months)")
    return save_figure(fig, path)


def plot_error_by_age_bin(
    pred: Any,
    true: Any,
    path: str | os.PathLike,
    *,
    male: Any = None,
    bins: Sequence[float] = DEFAULT_AGE_BINS_MONTHS,
) -> Path:
    """Bar chart of MAE per true-age bin, with grouped male/female bars when ``male`` is given.

    Each bar is labelled with its sample count; empty bins show ``n=0`` and no bar.

    Returns:
        The written path.
    """
    p, t = _pair(pred, true)
    groups: list[tuple[str, list[dict], str]]
    if male is None:
        groups = [("all", mae_by_age_bin(p, t, bins), _ALL_COLOUR)]
    else:
        m = _as_male_mask(male, p.size)
        groups = []
        for mask, label, colour in ((m, "male", _MALE_COLOUR), (~m, "female", _FEMALE_COLOUR)):
            if mask.any():
                groups.append((label, mae_by_age_bin(p[mask], t[mask], bins), colour))
            else:
                # An absent sex still gets its legend entry and n=0 labels, so the reader
                # sees the data is missing rather than wondering where the bars went.
                empty = mae_by_age_bin(p, t, bins)
                groups.append((label, [dict(r, n=0, mae=None) for r in empty], colour))

    labels = [r["bin"] for r in groups[0][1]]
    x = np.arange(len(labels))
    width = 0.8 / len(groups)
    fig = new_figure(max(6.4, 1.1 * len(labels) + 2), 4.8)
    ax = fig.add_subplot()
    top = max((r["mae"] for _, rows, _ in groups for r in rows if r["mae"] is not None),
              default=1.0)
    for gi, (label, rows, colour) in enumerate(groups):
        offs = x - 0.4 + width * (gi + 0.5)
        heights = [r["mae"] if r["mae"] is not None else 0.0 for r in rows]
        bars = ax.bar(offs, heights, width=width * 0.95, color=colour,
                      label=label if len(groups) > 1 else None)
        for bar, r in zip(bars, rows):
            ax.annotate(f"n={r['n']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize="x-small")
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_xticks(x, labels)
    ax.set_xlabel("True bone age bin (months)")
    ax.set_ylabel("MAE (months)")
    ax.grid(True, axis="y", alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize="small")
    ax.set_title("MAE by age bin")
    return save_figure(fig, path)


def plot_errors_by_band(tables: dict[str, list[dict]], path: str | os.PathLike, *,
                        bias_limit: float | None = 5.0) -> Path:
    """MAE (top) and mean signed error (bottom) per age band and sex, one bar per model.

    ``tables`` maps a model's label to its :func:`~boneage.evaluation.metrics.errors_by_band`
    rows (the same bands for every model); the first model is drawn lightest, so "before" and
    "after" read left to right. ``bias_limit`` draws the ±limit lines a band's bias is judged by.
    """
    if not tables:
        raise InputError("plot_errors_by_band needs at least one model's rows")
    labels = list(tables)
    first = tables[labels[0]]
    groups = [(r["sex"], r["band"]) for r in first]
    for label, rows in tables.items():
        if [(r["sex"], r["band"]) for r in rows] != groups:
            raise InputError(f"the rows of {label!r} are not the same sexes and bands as {labels[0]!r}'s")
    x = np.arange(len(groups))
    width = 0.8 / len(labels)
    fig = new_figure(max(7.0, 0.75 * len(groups) + 2.5), 6.4)
    ax_mae, ax_bias = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    handles = []
    for k, label in enumerate(labels):
        rows = tables[label]
        # Colour says the sex (as in every plot here), shade says the model.
        colours = [_FEMALE_COLOUR if r["sex"] == "F" else _MALE_COLOUR for r in rows]
        alpha = 0.35 + 0.65 * (k + 1) / len(labels)
        offs = x - 0.4 + width * (k + 0.5)
        for ax, key in ((ax_mae, "mae"), (ax_bias, "bias")):
            heights = [r[key] if r[key] is not None else 0.0 for r in rows]
            ax.bar(offs, heights, width=width * 0.95, color=colours, alpha=alpha,
                   edgecolor="black", linewidth=0.4)
        handles.append(Patch(facecolor=_ALL_COLOUR, alpha=alpha, edgecolor="black", label=label))
    for r, xi in zip(first, x):
        ax_mae.annotate(f"n={r['n']}", (xi, 0), xytext=(0, -22), textcoords="offset points",
                        ha="center", va="top", fontsize="xx-small", annotation_clip=False)
    ticks = [f"{sex} {band}" for sex, band in groups]
    ax_mae.set_xticks(x, ticks, fontsize="small")
    ax_bias.set_xticks(x, ticks, fontsize="small")
    ax_mae.set_ylabel("MAE (months)")
    ax_bias.set_ylabel("mean signed error (months)")
    ax_bias.axhline(0.0, color="black", linewidth=0.6)
    if bias_limit is not None:
        for y in (-bias_limit, bias_limit):
            ax_bias.axhline(y, color="grey", linestyle="--", linewidth=0.8)
    ax_bias.set_xlabel("sex and true age band (years); the lighter bar is the first model")
    for ax in (ax_mae, ax_bias):
        ax.grid(True, axis="y", alpha=0.3)
    ax_mae.legend(handles=handles, fontsize="small")
    ax_mae.set_title("Error by age band and sex (orange: girls, blue: boys)")
    return save_figure(fig, path)


def plot_robustness(rows: list[dict], path: str | os.PathLike, *, limit: float = 3.0,
                    pairs: dict | None = None, title: str = "") -> Path:
    """Horizontal bars of each preparation's mean shift against the as-stored estimates,
    with its 95 % interval and the ±``limit`` band shaded; a paired comparison (e.g. raw
    radiographs against their 100-px copies) is drawn as its own bar at the top.

    Returns:
        The written path.
    """
    labels = [r["preparation"] for r in rows]
    shifts = [r["mean_shift"] for r in rows]
    lows = [r["mean_shift"] - r["shift_ci95"][0] for r in rows]
    highs = [r["shift_ci95"][1] - r["mean_shift"] for r in rows]
    if pairs:
        labels.append(f"paired ids (n={pairs['n']})")
        shifts.append(pairs["mean_difference"])
        lo, hi = pairs.get("difference_ci95", (pairs["mean_difference"],) * 2)
        lows.append(pairs["mean_difference"] - lo)
        highs.append(hi - pairs["mean_difference"])
    y = np.arange(len(labels))[::-1]
    fig = new_figure(7.0, max(3.0, 0.28 * len(labels) + 1.2))
    ax = fig.add_subplot()
    ax.axvspan(-limit, limit, color="#009E73", alpha=0.12, label=f"within ±{limit:g} months")
    colours = ["#D55E00" if abs(s) > limit else _ALL_COLOUR for s in shifts]
    ax.barh(y, shifts, xerr=[lows, highs], color=colours, height=0.7, capsize=2,
            error_kw={"elinewidth": 0.8})
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_xlabel("mean shift of the bone age estimate (months)")
    reach = max([limit * 1.5] + [abs(s) + e for s, e in zip(shifts, highs)] + [abs(s) + e for s, e in zip(shifts, lows)])
    ax.set_xlim(-reach * 1.1, reach * 1.1)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="x-small")
    n = rows[0]["n"] if rows else 0
    ax.set_title(title or f"Same radiographs, prepared differently (n={n})", fontsize=10)
    return save_figure(fig, path)


#: Outline colours of the masks drawn by :func:`plot_mask_outlines`, in order (Okabe-Ito).
_MASK_COLOURS = ("#009E73", "#E69F00", "#CC79A7", "#56B4E9")


def plot_mask_outlines(images: Sequence[np.ndarray], masks: dict[str, Sequence[np.ndarray]],
                       path: str | os.PathLike, *, titles: Sequence[str] | None = None,
                       columns: int = 4, max_side: int = 512) -> Path:
    """Radiographs side by side, each with the outline of every named set of hand masks.

    Args:
        images: 2-D [0, 1] images, drawn at their own aspect ratio.
        masks: legend label → one 0/1 mask per image, the image's shape (e.g. ``{"reference":
            [...], "segmenter": [...]}``); at most four sets.
        titles: one line under each image (its id, a Dice).
        columns: images per row.
        max_side: longer side of each image as drawn (the outline is traced at that size too),
            which keeps a figure of full-resolution films small.

    Returns:
        The written path.

    Raises:
        InputError: no images, more mask sets than colours, or a mask count or shape that does
            not match the images.
    """
    import cv2

    if not images:
        raise InputError("no images to draw")
    if len(masks) > len(_MASK_COLOURS):
        raise InputError(f"at most {len(_MASK_COLOURS)} mask sets can be told apart, got {len(masks)}")
    if columns < 1:
        raise InputError(f"columns must be >= 1, got {columns}")
    for label, ms in masks.items():
        if len(ms) != len(images):
            raise InputError(f"mask set {label!r} has {len(ms)} masks for {len(images)} images")
        for i, (m, im) in enumerate(zip(ms, images)):
            if np.shape(m) != np.shape(im):
                raise InputError(f"mask set {label!r}, image {i}: mask shape {np.shape(m)} "
                                 f"does not match image shape {np.shape(im)}")
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    fig = new_figure(2.6 * cols, 3.2 * rows + 0.4)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        size = display_size(np.shape(image), max_side)
        small = cv2.resize(np.asarray(image, np.float32), size, interpolation=cv2.INTER_AREA)
        ax.imshow(small, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for colour, (label, ms) in zip(_MASK_COLOURS, masks.items()):
            m = cv2.resize(np.asarray(ms[i], np.uint8), size, interpolation=cv2.INTER_NEAREST)
            if m.any():
                ax.contour(m, levels=[0.5], colors=[colour], linewidths=1.2)
            # an empty mask still gets its legend entry, so a missed hand is visible as such
            ax.plot([], [], color=colour, label=label)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize="small")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    return save_figure(fig, path)
