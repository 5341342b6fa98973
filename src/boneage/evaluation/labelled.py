"""A model file's accuracy on a labelled folder or CSV: what ``boneage evaluate`` and
:func:`boneage.api.evaluate` run (batched PyTorch over cached views)."""

from __future__ import annotations

import numpy as np

from boneage.data.datasets import PreprocessedCache
from boneage.data.labels import load_samples
from boneage.data.split import holdout_subset
from boneage.errors import InputError
from boneage.evaluation import metrics
from boneage.evaluation.report import write_prediction_report
from boneage.inference.batch import predict_cached
from boneage.inference.predictor import Predictor


def evaluate_labelled(predictor: Predictor, data_dir=None, *, csv=None, images=None,
                      holdout: bool = False, limit: int | None = None, out=None,
                      progress: bool = False) -> dict:
    """MAE and friends of ``predictor`` (a PyTorch one: its ``model`` runs in batches) on a
    labelled folder (``labels.csv`` + ``images/``) or CSV; arguments as
    :func:`boneage.api.evaluate`'s."""
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    samples = load_samples(data_dir, csv, images, None if holdout else limit)
    if holdout:
        samples = holdout_subset(samples, predictor.recipe.data, predictor.info)[:limit]
    missing = [s.id for s in samples if s.boneage is None]
    if missing:
        raise InputError(f"evaluation needs bone-age labels; {len(missing)} image(s) have none")
    cache = PreprocessedCache(samples, predictor.recipe, progress=progress)
    preds, per_view = predict_cached(predictor.model, predictor.recipe, cache, range(len(samples)),
                                     predictor.device, progress=progress)
    extra = {"model_name": predictor.recipe.name, "model_hash": predictor.info.get("model_sha256", "")[:16]}
    if out is not None:
        return write_prediction_report(out, samples, preds, spreads=[float(np.std(v)) for v in per_view],
                                       extra=extra)
    summary = metrics.summarize(preds, np.array([s.boneage for s in samples]),
                                np.array([s.male for s in samples]))
    summary.update(extra)
    return summary
