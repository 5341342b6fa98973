"""Batched prediction over many cached images (validation, ``boneage evaluate``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from boneage.config import Recipe
from boneage.inference.aggregate import aggregate


@torch.no_grad()
def predict_cached(model: torch.nn.Module, recipe: Recipe, cache, indices: Sequence[int],
                   device: str | torch.device = "cpu", batch_size: int = 32,
                   progress: bool = False, num_workers: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aggregated bone age (months) per image and the per-view predictions behind each.

    ``cache`` is a :class:`boneage.data.datasets.PreprocessedCache`; views and aggregation
    follow the recipe exactly as :class:`~boneage.inference.Predictor` does for one image.
    """
    from boneage.data.datasets import ViewsDataset, collate_views

    ds = ViewsDataset(cache, indices, recipe)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_views,
                        num_workers=num_workers)
    if progress:
        from tqdm import tqdm
        loader = tqdm(loader, desc="predict", unit="batch", leave=False, disable=None)
    was_training = model.training
    model.eval()
    t = recipe.target
    per_view: list[np.ndarray] = []
    for batch in loader:
        x = batch["views"].to(device, non_blocking=True)
        sex = torch.repeat_interleave(batch["sex"], batch["counts"]).to(device)
        scaled = model(x, sex).float().cpu().numpy()
        months = scaled * t.std + t.mean
        per_view.extend(np.split(months, np.cumsum(batch["counts"].numpy())[:-1]))
    model.train(was_training)
    inf = recipe.inference
    preds = np.array([aggregate(v, inf.aggregate, inf.percentile) for v in per_view])
    return preds, per_view
