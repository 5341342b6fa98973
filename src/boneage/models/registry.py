"""Model registry: ``@register_model`` and ``create_model(name, **options)``.

Each builder declares the input its architecture expects (:class:`InputSpec`: channels and
the normalisation its pretrained weights were trained with), so a recipe that does not say
otherwise feeds it correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from boneage.registry import Registry

MODELS: Registry = Registry("model")


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects: gray replicated to ``channels``, then ``(x - mean) / std``;
    ``size`` is the side it was designed for (None: any); ``min_size`` the smallest side it
    can read (None: not declared). A network that pads its way through a smaller input
    still runs, but its last feature map is mostly padding, not the hand."""

    channels: int = 1
    mean: float = 0.0
    std: float = 1.0
    size: int | None = None
    min_size: int | None = None


def register_model(fn: Callable | None = None, *, input: InputSpec | Callable | None = None):
    """Register a model builder under its function name: ``@register_model`` or
    ``@register_model(input=InputSpec(channels=3, mean=..., std=...))``. ``input`` may be a
    function of the recipe's model options returning the spec (a wrapper such as ``per_sex``
    expects what the model it wraps expects)."""
    def deco(f: Callable) -> Callable:
        f.input_spec = input or InputSpec()
        return MODELS.register(f)
    return deco(fn) if fn is not None else deco


def model_input_spec(name: str, options: dict | None = None) -> InputSpec:
    """The input a registered model declares for ``options`` (its recipe's ``model.options``;
    an unknown name lists the valid ones)."""
    spec = MODELS.get(name).input_spec
    return spec(dict(options or {})) if callable(spec) else spec


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return MODELS.names()


def create_model(name: str, **options) -> nn.Module:
    """Build a registered bone age model; a typo lists the valid names, a bad option names
    the recipe key ``model.options``."""
    return MODELS.create(name, where="model", **options)
