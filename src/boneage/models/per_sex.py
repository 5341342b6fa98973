"""One model file holding a male and a female model, each image routed by its sex.

The paper trains one network per sex, since boys and girls are read against different
standards. :class:`PerSexModel` holds both networks (same architecture, same start) and sends
each image of a batch to its sex's network, so one recipe trains both through the one loop
(each network learns only from its own sex's images) and one model file predicts through the
usual :class:`~boneage.inference.Predictor`, which already refuses an unknown sex for a model
that needs it.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from boneage.errors import ConfigError
from boneage.models.head import training_penalty
from boneage.models.registry import MODELS, InputSpec, model_input_spec, register_model

#: Sub-network names, in the order of their flag (``Sex.flag``: 1 male, 0 female).
SEXES = ("male", "female")


class PerSexModel(nn.Module):
    """``forward(x, sex)``: images with sex 1 go to ``male``, sex 0 to ``female``; one value per
    image in the batch's order. Any other sex value is an error, not a guess."""

    #: The Predictor asks this before the head's: without sex there is no network to route to.
    uses_sex = True
    #: A batch (or one process's share of it under torchrun) of one sex leaves the other
    #: network without gradients; the DDP wrapper must expect that.
    may_leave_parameters_unused = True

    def __init__(self, male: nn.Module, female: nn.Module):
        super().__init__()
        self.male, self.female = male, female
        inner = getattr(male, "stage_prefixes", None)
        if inner:
            # A stage is unfrozen in both networks at once.
            self.stage_prefixes = {s: tuple(f"{sex}.{p}" for sex in SEXES for p in prefixes)
                                   for s, prefixes in inner.items()}

    def forward(self, x: torch.Tensor, sex: torch.Tensor | None = None) -> torch.Tensor:
        if sex is None:
            raise ValueError("a per-sex model needs each image's sex (1 = male, 0 = female)")
        flag = sex.reshape(-1).float()
        if flag.numel() != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} images but {flag.numel()} sex values")
        if not bool(((flag == 0) | (flag == 1)).all()):
            raise ValueError("a per-sex model routes by sex, which must be 1 (male) or 0 (female)")
        idx = {"male": torch.nonzero(flag == 1).view(-1), "female": torch.nonzero(flag == 0).view(-1)}
        parts, order = [], []
        for name in SEXES:
            if len(idx[name]):  # a batch of one sex leaves the other network idle
                net = getattr(self, name)
                parts.append(net(x[idx[name]], flag[idx[name]]))
                order.append(idx[name])
        out = torch.cat(parts)
        # Back into the batch's order (a gather, so gradients reach both networks).
        return out[torch.argsort(torch.cat(order))]

    def network_for(self, male: bool | float) -> nn.Module:
        """The network that reads images of this sex (what a heat map must explain)."""
        return self.male if float(male) == 1.0 else self.female

    def penalty(self) -> torch.Tensor | float:
        """Both networks' own training-loss terms (see ``models.head.training_penalty``)."""
        return training_penalty(self.male) + training_penalty(self.female)


def _inner_spec(options: dict) -> InputSpec:
    return model_input_spec(_inner_name(options), options)


def _inner_name(options: dict) -> str:
    name = options.get("model")
    if not isinstance(name, str) or not name:
        raise ConfigError("model.options.model: per_sex needs the name of the model it holds for "
                          "each sex (e.g. efficientnet_lite0)")
    if name == "per_sex":
        raise ConfigError("model.options.model: per_sex cannot hold per_sex models")
    MODELS.get(name)  # an unknown name lists the valid ones
    return name


@register_model(input=_inner_spec)
def per_sex(model: str = "", **options) -> PerSexModel:
    """A male and a female ``model`` (any registered bone-age model; ``options`` are its own,
    e.g. ``pretrained``), both starting from the same weights. Their heads get no sex branch
    unless ``sex_units`` says otherwise: within one network sex is constant."""
    name = _inner_name({"model": model})
    if "sex_units" in inspect.signature(MODELS.get(name)).parameters:
        options.setdefault("sex_units", 0)
    male = MODELS.create(name, where="model.options", **options)
    return PerSexModel(male, copy.deepcopy(male))
