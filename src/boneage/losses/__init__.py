"""Regression losses behind one interface: ``loss(pred, target, age_months=None)``.

Losses work on the scaled targets the models regress. Losses that depend on the training
label distribution (e.g. the Gaussian-weighted MSE) receive it through ``prepare(ages)``
before training starts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from boneage.registry import Registry

LOSSES: Registry = Registry("loss")


class RegressionLoss(nn.Module):
    """Base class: ``forward(pred, target, age_months=None) -> scalar``."""

    def prepare(self, train_ages_months: np.ndarray) -> None:
        """Called once with the training labels (months); most losses ignore it."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                age_months: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def validation_loss(self, pred: torch.Tensor, target: torch.Tensor,
                        age_months: torch.Tensor | None = None) -> torch.Tensor:
        """The loss reported on validation data (the training loss unless a subclass says)."""
        return self(pred, target, age_months)


@LOSSES.register("mse")
class MSELoss(RegressionLoss):
    """Mean squared error."""

    def forward(self, pred, target, age_months=None):
        return torch.mean((pred - target) ** 2)


@LOSSES.register("mae")
class MAELoss(RegressionLoss):
    """Mean absolute error (L1)."""

    def forward(self, pred, target, age_months=None):
        return torch.mean(torch.abs(pred - target))


@LOSSES.register("gaussian_mse")
class GaussianWeightedMSE(RegressionLoss):
    """MSE up-weighting rare ages (se-resnet-compression paper, eqs. 4-5).

    ``L = mean((1 + a_i) (y_i - g_i)^2)`` with ``a_i = beta * N(c_i; 0, sigma)``, where ``c_i`` is
    the number of training samples in the age bin of sample ``i`` (bins of ``bin_width``
    months: 1 for months, 12 for years). Rare ages (small ``c_i``) get the largest weight.
    The paper uses sigma = 400 and beta = 100 for a largest class of 1,113 samples.
    """

    def __init__(self, sigma: float = 400.0, beta: float = 100.0, bin_width: float = 12.0):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not bin_width > 0:
            raise ValueError(f"bin_width must be > 0 months, got {bin_width}")
        self.sigma, self.beta, self.bin_width = float(sigma), float(beta), float(bin_width)
        self.first_bin: int | None = None
        self.register_buffer("alpha_by_bin", torch.zeros(0))

    def alpha(self, counts) -> np.ndarray:
        """The weight ``a`` for sample counts ``c`` (array-like)."""
        c = np.asarray(counts, dtype=np.float64)
        return self.beta * np.exp(-c ** 2 / (2 * self.sigma ** 2)) / (self.sigma * np.sqrt(2 * np.pi))

    def prepare(self, train_ages_months: np.ndarray) -> None:
        bins = np.floor(np.asarray(train_ages_months, dtype=np.float64) / self.bin_width).astype(int)
        if bins.size == 0:
            raise ValueError("Gaussian-weighted loss needs training ages to count")
        self.first_bin = int(bins.min())
        counts = np.bincount(bins - self.first_bin)
        self.alpha_by_bin = torch.tensor(self.alpha(counts), dtype=torch.float32)

    def weights(self, age_months: torch.Tensor) -> torch.Tensor:
        """``1 + a_i`` for each age; ages outside the training range are an error."""
        if self.first_bin is None:
            raise RuntimeError("call prepare(train_ages) before using the Gaussian-weighted loss")
        idx = torch.floor(age_months.detach().double() / self.bin_width).long() - self.first_bin
        n = self.alpha_by_bin.numel()
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            lo, hi = self.first_bin * self.bin_width, (self.first_bin + n) * self.bin_width
            raise ValueError(f"age {float(age_months[bad][0]):g} months is outside the range seen in "
                             f"training ({lo:g}-{hi:g} months) for the loss weights")
        return 1.0 + self.alpha_by_bin.to(age_months.device)[idx]

    def forward(self, pred, target, age_months=None):
        if age_months is None:
            raise ValueError("the Gaussian-weighted loss needs the ages (months) of the batch")
        return torch.mean(self.weights(age_months) * (pred - target) ** 2)

    def validation_loss(self, pred, target, age_months=None):
        # Validation ages may fall outside the training bins; report the plain MSE there.
        return torch.mean((pred - target) ** 2)


#: Decorator registering a loss class: ``@register_loss("name")``.
register_loss = LOSSES.register


def list_losses() -> list[str]:
    """Names of the registered regression losses, sorted."""
    return LOSSES.names()


def create_loss(name: str, **options) -> RegressionLoss:
    """Build a registered loss; a typo lists the valid names."""
    return LOSSES.create(name, where="loss", **options)


__all__ = ["LOSSES", "RegressionLoss", "MSELoss", "MAELoss", "GaussianWeightedMSE", "create_loss", "list_losses", "register_loss"]
