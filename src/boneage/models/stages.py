"""Named stages of a network: the parts paced transfer learning freezes and unfreezes.

A model names its stages bottom to top as prefixes of its parameter names (attribute
``stage_prefixes``; Xception's entry, middle and exit flows, EfficientNet-Lite0 split the
same way by feature-map size). Every parameter outside the stages belongs to the new head,
which trains from the first epoch. Nothing here knows a particular architecture: any model
that names its stages can be trained in phases (:mod:`boneage.engine.phases`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

from boneage.errors import ConfigError
from boneage.models.registry import MODELS

#: The group of every parameter outside the named stages (the newly initialised layers).
HEAD = "head"


def named_stages(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{stage: parameter-name prefixes}`` of ``model``, bottom stage first (looks through a
    DistributedDataParallel wrapper); a model that names none is a one-line ConfigError."""
    model = getattr(model, "module", model)
    stages = getattr(model, "stage_prefixes", None)
    if not stages:
        staged = [n for n in MODELS.names() if n in STAGED_MODELS]
        raise ConfigError(f"phases: the model ({type(model).__name__}) names no stages to unfreeze; "
                          f"models that do: {', '.join(staged)}")
    return {name: tuple(prefixes) for name, prefixes in stages.items()}


def stage_of(parameter: str, stages: Mapping[str, Sequence[str]]) -> str:
    """The stage a parameter name belongs to, or :data:`HEAD`."""
    for name, prefixes in stages.items():
        if any(parameter.startswith(p) for p in prefixes):
            return name
    return HEAD


def stage_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Every parameter of ``model`` by group: :data:`HEAD` first, then the stages bottom to
    top. A stage that matches no parameter means its prefixes are wrong: an error, not a
    silently empty group."""
    stages = named_stages(model)
    model = getattr(model, "module", model)
    groups: dict[str, list[nn.Parameter]] = {HEAD: [], **{s: [] for s in stages}}
    for name, param in model.named_parameters():
        groups[stage_of(name, stages)].append(param)
    empty = [s for s in stages if not groups[s]]
    if empty:  # pragma: no cover - a wrong prefix table in a model builder
        raise RuntimeError(f"stages {empty} of {type(model).__name__} match no parameter")
    return groups


def prefixed(stages: Mapping[str, Sequence[str]], prefix: str) -> dict[str, tuple[str, ...]]:
    """The stage table of a sub-network that lives under ``prefix`` (e.g. ``backbone.``)."""
    return {name: tuple(prefix + p for p in prefixes) for name, prefixes in stages.items()}


#: Registered models that name their stages (for the error that lists them).
STAGED_MODELS = ("xception", "efficientnet_lite0", "per_sex")
