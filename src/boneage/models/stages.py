"""Named stages of a network: the parts paced transfer learning freezes and unfreezes.

A model names its stages bottom to top as prefixes of its parameter names (attribute
``stage_prefixes``; Xception's entry, middle and exit flows, EfficientNet-Lite0 split the
same way by feature-map size). Every parameter outside the stages belongs to the new head,
which trains from the first epoch. Nothing here knows a particular architecture: any model
that names its stages can be trained in phases (:mod:`boneage.engine.phases`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from boneage.errors import ConfigError

#: The group of every parameter outside the named stages (the newly initialised layers).
HEAD = "head"


def named_stages(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{stage: parameter-name prefixes}`` of ``model``, bottom stage first (looks through a
    DistributedDataParallel wrapper); a model that names none is a one-line ConfigError."""
    model = getattr(model, "module", model)
    stages = getattr(model, "stage_prefixes", None)
    if not stages:
        from boneage.models.registry import MODELS

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


def load_weights_file(module: nn.Module, path: str | Path, arch: str,
                      drop: Sequence[str] = ("fc.", "classifier.", "head.fc.")) -> None:
    """Load a local weights file (``.safetensors``, or a PyTorch state dict ``.pth``/``.pt``)
    in timm's parameter names into ``module``, strictly.

    No download ever happens. The classifier of the source task (``drop``) is left out. A
    1-channel stem takes the sum of the file's RGB filters (as timm does for gray input). A
    file that does not match the architecture is a one-line ConfigError naming the first
    mismatched tensor, in the module's own order.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            source = load_file(str(path), device="cpu")
        else:
            source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader has its own error types for a damaged file
        raise ConfigError(f"{path}: cannot read the weights ({str(exc).splitlines()[0]})") from None
    if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
        source = source["state_dict"]
    if not isinstance(source, dict):
        raise ConfigError(f"{path}: not a state dict of tensors")
    target = module.state_dict()
    source = {k: v for k, v in source.items() if k in target or not k.startswith(tuple(drop))}
    for key, want in target.items():
        if key not in source:
            raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {key} "
                              f"(missing from the file)")
        got = source[key]
        if tuple(got.shape) != tuple(want.shape):
            if got.ndim == 4 and got.shape[1] == 3 and want.shape[1] == 1 and got.shape[0] == want.shape[0]:
                source[key] = got.sum(dim=1, keepdim=True)
                continue
            raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {key} "
                              f"(file {tuple(got.shape)}, model {tuple(want.shape)})")
    extra = [k for k in source if k not in target]
    if extra:
        raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {extra[0]} "
                          f"(in the file, not in the model; {len(extra)} such)")
    module.load_state_dict(source, strict=True)


#: Registered models that name their stages (for the error that lists them).
STAGED_MODELS = ("xception", "efficientnet_lite0", "per_sex")
