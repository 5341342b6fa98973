"""Deterministic train/validation split."""

from __future__ import annotations

import numpy as np
from boneage.errors import InputError


def train_val_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a seeded random split; same (n, fraction, seed) → same split.

    At least one item lands in each part when ``n >= 2`` and ``0 < val_fraction < 1``.
    """
    if n < 1:
        raise ValueError(f"need at least one sample to split, got n={n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def holdout_subset(samples: list, data_config, info: dict) -> list:
    """The samples a model held back for validation.

    Model files store the held-back ids (``info["val_ids"]``): exactly those are returned,
    and a folder missing any of them is an error. Older files are re-derived from the stored
    split (``data_config``: the recipe's ``data``; ``n_train`` + ``n_val`` must equal
    ``len(samples)``, i.e. the same labelled folder).
    """
    if info.get("val_ids"):
        by_id = {s.id: s for s in samples}
        missing = [i for i in info["val_ids"] if i not in by_id]
        if missing:
            raise InputError(f"{len(missing)} of the model's {len(info['val_ids'])} held-back images are "
                             f"not in this folder (first: {missing[0]}); give the folder it was trained on")
        return [by_id[i] for i in info["val_ids"]]

    n_trained = info.get("n_train", 0) + info.get("n_val", 0)
    if len(samples) != n_trained:
        raise InputError(f"the held-back images can only be found in the folder the model was "
                         f"trained on ({n_trained} labelled images); this one has {len(samples)}")
    _, val_idx = train_val_split(len(samples), data_config.val_fraction, data_config.split_seed)
    return [samples[i] for i in val_idx]
