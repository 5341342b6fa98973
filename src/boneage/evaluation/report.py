"""One writer for prediction reports: validation after training and ``boneage evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from boneage.engine.trainer import write_csv
from boneage.evaluation import metrics, plots


def write_prediction_report(out_dir: str | Path, samples: Sequence, preds: Sequence[float], *,
                            spreads: Sequence[float] | None = None, prefix: str = "",
                            extra: dict | None = None) -> dict:
    """Write ``{prefix}predictions.csv``, ``{prefix}summary.json`` and the plots
    ``{prefix}pred_vs_true.png``, ``{prefix}bland_altman.png``, ``{prefix}error_by_age_bin.png``.

    ``samples`` are labelled :class:`~boneage.data.labels.Sample` s in the order of ``preds``;
    ``spreads`` (per-view standard deviations) add a column; ``extra`` is merged into the
    summary. Returns the summary.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds = np.asarray(preds, dtype=np.float64)
    true = np.array([s.boneage for s in samples], dtype=np.float64)
    male = np.array([s.male for s in samples])
    rows = []
    for i, s in enumerate(samples):
        row = {"id": s.id, "male": s.male, "boneage": float(true[i]), "predicted": round(float(preds[i]), 2)}
        if spreads is not None:
            row["spread"] = round(float(spreads[i]), 2)
        rows.append(row)
    write_csv(out / f"{prefix}predictions.csv", rows)
    summary = metrics.summarize(preds, true, male)
    summary.update(extra or {})
    (out / f"{prefix}summary.json").write_text(json.dumps(summary, indent=2))
    plots.plot_pred_vs_true(preds, true, out / f"{prefix}pred_vs_true.png", male=male)
    plots.plot_bland_altman(preds, true, out / f"{prefix}bland_altman.png")
    plots.plot_error_by_age_bin(preds, true, out / f"{prefix}error_by_age_bin.png", male=male)
    return summary
