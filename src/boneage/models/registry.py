"""Model registry: ``@register_model`` and ``create_model(name, **options)``."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from boneage.errors import ConfigError, unknown_name

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **options) -> nn.Module:
    """Build a registered bone age model; a typo lists the valid names."""
    if name not in _MODELS:
        raise unknown_name("model", name, list(_MODELS))
    try:
        return _MODELS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc
