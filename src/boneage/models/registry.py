"""Model registry: ``@register_model`` and ``create_model(name, **options)``."""

from __future__ import annotations

import torch.nn as nn

from boneage.registry import Registry

MODELS: Registry = Registry("model")

#: Decorator registering a model builder under its function name.
register_model = MODELS.register


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return MODELS.names()


def create_model(name: str, **options) -> nn.Module:
    """Build a registered bone age model; a typo lists the valid names, a bad option names
    the recipe key ``model.options``."""
    return MODELS.create(name, where="model", **options)
