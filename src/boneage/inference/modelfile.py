"""Model files: safetensors weights with the full recipe embedded in the header metadata.

One file alone rebuilds the model, its preprocessing and its target scaling, so it reproduces
its predictions anywhere. Writing goes through a temporary file and ``os.replace`` so an
interrupted save never leaves a truncated model behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from boneage.config import Recipe
from boneage.errors import InputError
from boneage.fileutils import atomic_path, read_safetensors_metadata
from boneage.models import create_model

FORMAT_VERSION = "1"


def save_model_file(path: str | Path, model: torch.nn.Module, recipe: Recipe,
                    info: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and ``recipe`` (plus free-form ``info``) to one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"boneage_format": FORMAT_VERSION,
            "recipe": json.dumps(recipe.to_dict()),
            "info": json.dumps(info or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_model_metadata(path: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and info stored in a model file, without loading the weights."""
    meta = read_safetensors_metadata(path, "model file")
    if meta.get("boneage_format") != FORMAT_VERSION or "recipe" not in meta:
        raise InputError("not a boneage model file (no embedded recipe)", path)
    return Recipe.from_dict(json.loads(meta["recipe"])), json.loads(meta.get("info", "{}"))


def build_model(recipe: Recipe, **extra) -> torch.nn.Module:
    """The recipe's model, freshly initialised."""
    options = dict(recipe.model.options)
    options.update(extra)
    options.setdefault("in_chans", recipe.channels)
    return create_model(recipe.model.name, **options)


def load_model_file(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, Recipe, dict[str, Any]]:
    """Rebuild the model from a file: ``(model in eval mode, recipe, info)``."""
    recipe, info = read_model_metadata(path)
    # Pretrained initialisation is pointless (and may need a file) when weights follow.
    model = build_model(recipe, **({"pretrained": None} if "pretrained" in recipe.model.options else {}))
    state = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not match the recipe's model (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    return model.to(device).eval(), recipe, info
