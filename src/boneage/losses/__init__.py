"""Regression losses behind one interface: ``loss(pred, target, age_months=None)``.

Losses work on the scaled targets the models regress. Losses that depend on the training
label distribution (e.g. the Gaussian-weighted MSE) receive it through ``prepare(ages)``
before training starts.
"""

from __future__ import annotations

import difflib
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from boneage.errors import ConfigError


class RegressionLoss(nn.Module):
    """Base class: ``forward(pred, target, age_months=None) -> scalar``."""

    def prepare(self, train_ages_months: np.ndarray) -> None:
        """Called once with the training labels (months); most losses ignore it."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                age_months: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class MSELoss(RegressionLoss):
    """Mean squared error."""

    def forward(self, pred, target, age_months=None):
        return torch.mean((pred - target) ** 2)


class MAELoss(RegressionLoss):
    """Mean absolute error (L1)."""

    def forward(self, pred, target, age_months=None):
        return torch.mean(torch.abs(pred - target))


_LOSSES: dict[str, Callable[..., RegressionLoss]] = {"mse": MSELoss, "mae": MAELoss}


def register_loss(name: str):
    """Decorator registering a loss class under ``name``."""
    def deco(cls):
        _LOSSES[name] = cls
        return cls
    return deco


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def create_loss(name: str, **options) -> RegressionLoss:
    """Build a registered loss; a typo lists the valid names."""
    if name not in _LOSSES:
        close = difflib.get_close_matches(name, list(_LOSSES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint}; valid names: {', '.join(list_losses())}")
    try:
        return _LOSSES[name](**options)
    except TypeError as exc:
        raise ConfigError(f"loss {name!r}: {exc}") from exc


__all__ = ["RegressionLoss", "MSELoss", "MAELoss", "create_loss", "list_losses", "register_loss"]
