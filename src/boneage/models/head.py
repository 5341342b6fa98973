"""The one regression head every backbone shares: pooled features fused with sex."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class SexFusionHead(nn.Module):
    """Concatenate pooled image features with a dense embedding of sex, then regress.

    As in the RSNA 2017 winner and the papers built on it: ``sex`` (1 = male, 0 = female) goes
    through ``Linear(1, sex_units) + ReLU``; the result is concatenated to the (dropout-ed)
    image features, passed through optional hidden layers and a final ``Linear(·, 1)``.
    ``sex_units=0`` gives an image-only model (the papers' "without sex" ablation).
    ``dropout`` acts on the image features (the patch paper, after Bilbily); ``output_dropout``
    right before the output layer (the SE-ResNet paper's "dropout 0.5 before the output").
    ``output_l2``: α of an L2 penalty ``α Σ w²`` on the output layer's weights (BoneAgeNet),
    which :meth:`penalty` returns for the training loss.
    """

    def __init__(self, in_features: int, sex_units: int = 16, hidden: Sequence[int] = (),
                 dropout: float = 0.0, hidden_dropout: float = 0.0, output_dropout: float = 0.0,
                 output_l2: float = 0.0):
        super().__init__()
        if not output_l2 >= 0:
            raise ValueError(f"output_l2 must be >= 0 (α of the L2 penalty on the output layer), got {output_l2}")
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if sex_units < 0:
            raise ValueError(f"sex_units must be >= 0, got {sex_units}")
        for name, p in (("dropout", dropout), ("hidden_dropout", hidden_dropout),
                        ("output_dropout", output_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.sex_units = sex_units
        self.dropout = nn.Dropout(dropout)
        self.sex_fc = nn.Sequential(nn.Linear(1, sex_units), nn.ReLU(inplace=True)) if sex_units else None
        layers: list[nn.Module] = []
        width = in_features + sex_units
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True), nn.Dropout(hidden_dropout)]
            width = units
        self.hidden = nn.Sequential(*layers)
        self.output_dropout = nn.Dropout(output_dropout)
        self.out = nn.Linear(width, 1)
        self.output_l2 = float(output_l2)

    @property
    def uses_sex(self) -> bool:
        return self.sex_units > 0

    def penalty(self) -> torch.Tensor | float:
        """``output_l2 × Σ w²`` over the output layer's weights (0.0 when ``output_l2`` is 0)."""
        if not self.output_l2:
            return 0.0
        return self.output_l2 * self.out.weight.float().pow(2).sum()

    def forward(self, features: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(features)
        if self.sex_fc is not None:
            if sex is None:
                raise ValueError("this model uses sex; pass a tensor of 1 (male) / 0 (female)")
            x = torch.cat([x, self.sex_fc(sex.float().view(-1, 1))], dim=1)
        return self.out(self.output_dropout(self.hidden(x))).squeeze(1)


class BoneAgeModel(nn.Module):
    """A backbone producing pooled features plus the shared :class:`SexFusionHead`.

    ``forward_features`` returns the backbone's spatial feature map (for Grad-CAM / CAM);
    ``forward(x, sex)`` returns one (scaled) bone age per image, shape (B,).
    """

    def __init__(self, backbone: nn.Module, num_features: int, head: SexFusionHead):
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.backbone, "forward_features"):
            return self.backbone.forward_features(x)
        return self.backbone(x)

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        if feature_map.ndim == 4:
            return feature_map.mean(dim=(2, 3))
        return feature_map

    def forward(self, x: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(self.forward_features(x)), sex)

    def penalty(self) -> torch.Tensor | float:
        """What the model adds to its training loss (the head's output-layer L2 penalty)."""
        head_penalty = getattr(self.head, "penalty", None)
        return head_penalty() if callable(head_penalty) else 0.0


def training_penalty(model: nn.Module) -> torch.Tensor | float:
    """The regularisation term ``model`` adds to its training loss (0.0 for none); looks
    through a DistributedDataParallel wrapper to the model it trains."""
    model = getattr(model, "module", model)
    penalty = getattr(model, "penalty", None)
    return penalty() if callable(penalty) else 0.0
