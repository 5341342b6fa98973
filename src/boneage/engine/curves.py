"""The training curves every run writes (``training_curves.png``), from its metrics rows.

Here rather than beside the prediction plots of :mod:`boneage.evaluation.plots`: the loop
draws them after every run, and the loop sits below evaluation. Like those plots, a figure is
built on :class:`matplotlib.figure.Figure` with its own Agg canvas, never through ``pyplot``
(no global backend, no figure registry growing over a long run), and written atomically.
The two small figure helpers are repeated rather than shared because ``boneage.evaluation``
must stay importable without PyTorch, and every module of ``boneage.engine`` brings it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from boneage.errors import InputError
from boneage.visualize import new_figure, save_figure

__all__ = ["plot_training_curves", "phase_starts"]

# Okabe-Ito, as the evaluation plots: colour-blind-safe, and the same look in both.
_PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]


def phase_starts(history: list[dict]) -> list[tuple[int, str]]:
    """``(epoch, phase)`` of every row whose ``phase`` differs from the row before it: where
    each phase of a paced run after the first began (rows without a phase never start one)."""
    starts, previous = [], None
    for i, row in enumerate(history):
        phase = row.get("phase")
        if phase is not None and previous is not None and phase != previous:
            starts.append((int(row.get("epoch", i + 1)), str(phase)))
        previous = phase if phase is not None else previous
    return starts


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for ``key``, skipping rows where it is missing, None or non-finite."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        # A diverged epoch (NaN/inf loss) would wreck the axis scaling; leave a gap instead.
        if not math.isfinite(value):
            continue
        epoch = row.get("epoch")
        xs.append(float(epoch) if epoch is not None else float(i + 1))
        ys.append(value)
    return xs, ys


def plot_training_curves(
    history: list[dict],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("train_loss", "val_loss", "val_mae"),
) -> Path:
    """Plot per-epoch training curves.

    Args:
        history: rows like ``{"epoch": 1, "train_loss": .., "val_loss": .., "val_mae": ..}``;
            rows without ``epoch`` are numbered 1, 2, ... by position.
        path: PNG to write.
        metrics: keys to plot. Keys containing ``"mae"`` go on a second y axis in months,
            everything else on the left (loss) axis. Keys absent from every row are skipped,
            as are missing/None/non-finite values.

    Returns:
        The written path.

    Raises:
        InputError: if ``history`` is empty or none of ``metrics`` has any value.
    """
    if not history:
        raise InputError("history is empty; need at least one epoch row to plot")
    series = {k: _series(history, k) for k in metrics}
    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        raise InputError(
            f"history has no values for any of {list(metrics)}; "
            f"keys present: {sorted({k for row in history for k in row})}"
        )
    loss_keys = [k for k in series if "mae" not in k.lower()]
    mae_keys = [k for k in series if "mae" in k.lower()]

    fig = new_figure(7.0, 4.8)
    ax = fig.add_subplot()
    colours = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(series)}
    handles = []
    # A single point draws no line, so always show markers.
    for k in loss_keys:
        xs, ys = series[k]
        handles += ax.plot(xs, ys, marker="o", markersize=3, color=colours[k], label=k)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss" if loss_keys else "MAE (months)")
    ax.grid(True, alpha=0.3)

    if mae_keys:
        # With no loss curves, MAE goes on the main axis rather than a lonely twin axis.
        mae_ax = ax.twinx() if loss_keys else ax
        for k in mae_keys:
            xs, ys = series[k]
            handles += mae_ax.plot(xs, ys, marker="s", markersize=3, linestyle="--",
                                   color=colours[k], label=k)
        mae_ax.set_ylabel("MAE (months)")
    # A paced run's phases: a dotted line before the first epoch of each new one.
    for epoch, phase in phase_starts(history):
        ax.axvline(epoch - 0.5, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(phase, (epoch - 0.5, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize="x-small", color="0.3")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(handles=handles, labels=[h.get_label() for h in handles],
              loc="upper right", fontsize="small")
    ax.set_title("Training curves")
    return save_figure(fig, path)
