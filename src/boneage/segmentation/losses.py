"""Segmentation losses: pixel-wise cross entropy + (1 − Dice), the paper's equation (3).

The paper's Dice term is computed on the Otsu-thresholded output, which has no gradient; the
training loss uses the soft Dice of the probability map instead (the usual differentiable
surrogate), and the hard Dice after Otsu is what validation reports
(:func:`boneage.models.segmenter.otsu_mask`, :func:`boneage.models.unet.dice_score`).
The cross entropy is averaged over pixels rather than summed, so its weight against the Dice
term does not depend on the image size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as TF

from boneage.registry import Registry

__all__ = ["SEGMENTATION_LOSSES", "soft_dice", "CEDiceLoss", "CELoss", "DiceLoss"]

#: Losses a segmentation recipe names in ``loss.name``: ``forward(logits, mask) -> scalar``.
SEGMENTATION_LOSSES: Registry = Registry("segmentation loss")


def soft_dice(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-image soft Dice ``(2 Σ p t + s) / (Σ p + Σ t + s)`` of (N, 1, H, W) tensors, (N,).

    ``smooth`` keeps an empty mask with an empty prediction at 1 instead of 0/0.
    """
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dim=dims)
    return (2.0 * inter + smooth) / (prob.sum(dim=dims) + target.sum(dim=dims) + smooth)


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(target.shape)} differ in shape")


@SEGMENTATION_LOSSES.register("ce_dice")
class CEDiceLoss(nn.Module):
    """Mean binary cross entropy of the logits + (1 − mean soft Dice): the paper's loss."""

    def __init__(self, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        if not dice_weight >= 0:
            raise ValueError(f"dice_weight must be >= 0, got {dice_weight}")
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0, got {smooth}")
        self.dice_weight, self.smooth = float(dice_weight), float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        ce = TF.binary_cross_entropy_with_logits(logits, target)
        dice = soft_dice(torch.sigmoid(logits), target, self.smooth).mean()
        return ce + self.dice_weight * (1.0 - dice)


@SEGMENTATION_LOSSES.register("ce")
class CELoss(CEDiceLoss):
    """Pixel-wise binary cross entropy alone (the ablation without the Dice term)."""

    def __init__(self):
        super().__init__(dice_weight=0.0)


@SEGMENTATION_LOSSES.register("dice")
class DiceLoss(nn.Module):
    """1 − mean soft Dice alone."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0, got {smooth}")
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(logits, target)
        return 1.0 - soft_dice(torch.sigmoid(logits), target, self.smooth).mean()
