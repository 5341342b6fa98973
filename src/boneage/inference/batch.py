"""Prediction over many cached, preprocessed images (validation, ``boneage evaluate``).

It goes through the same :class:`~boneage.inference.Predictor` as single images, so views,
test-time augmentation, de-scaling and aggregation cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from boneage.config import Recipe
from boneage.inference.torch_predictor import TorchPredictor

#: Images per forward batch group (their views are batched together).
IMAGES_PER_CHUNK = 64


def predict_cached(model: torch.nn.Module, recipe: Recipe, cache, indices: Sequence[int],
                   device: str | torch.device = "cpu", batch_size: int = 32,
                   progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aggregated bone age (months) per image and the per-view predictions behind each.

    ``cache`` is a :class:`boneage.data.datasets.PreprocessedCache`. The model's train/eval
    mode is restored afterwards.
    """
    indices = [int(i) for i in indices]
    was_training = model.training
    predictor = TorchPredictor(model, recipe, device=str(device), batch_size=batch_size)
    starts = range(0, len(indices), IMAGES_PER_CHUNK)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="predict", unit="chunk", leave=False, disable=None)
    per_view: list[np.ndarray] = []
    try:
        for start in starts:
            chunk = indices[start:start + IMAGES_PER_CHUNK]
            per_view.extend(predictor.per_view_preprocessed(
                [cache.copies(k) for k in chunk], [cache.samples[k].sex for k in chunk]))
    finally:
        model.train(was_training)
    preds = np.array([predictor.aggregate(v) for v in per_view])
    return preds, per_view
