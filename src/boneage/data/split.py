"""Deterministic train/validation split."""

from __future__ import annotations

import numpy as np


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
