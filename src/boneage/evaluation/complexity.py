"""Space and time complexity of models, as in the patch paper's tables 3 and 4."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PAPER_MODELS = ("resnet18", "resnet18_cbam", "resnet18_channel_attention", "inception_v4")


@torch.no_grad()
def model_complexity(name: str, *, in_chans: int = 1, patch_size: int = 224, n_patches: int = 25,
                     repeats: int = 3, options: dict | None = None, threads: int | None = None) -> dict:
    """Parameters, memory, model-file size and CPU inference time per image (all its patches).

    Memory is the bytes of parameters and buffers; the file size is that of a real model file
    (safetensors + recipe); the time is the median of ``repeats`` timed forward passes of one
    image's ``n_patches`` patches as one batch, after one warm-up pass.
    """
    from boneage.config import Recipe
    from boneage.inference.modelfile import save_model_file
    from boneage.models import create_model

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads:
        torch.set_num_threads(threads)
    model = create_model(name, in_chans=in_chans, **(options or {})).eval()
    params = sum(p.numel() for p in model.parameters())
    mem = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Recipe(name=f"complexity-{name}")
        recipe.model.name = name
        f = save_model_file(Path(tmp) / "m.safetensors", model, recipe)
        file_bytes = f.stat().st_size
    x = torch.rand(n_patches, in_chans, patch_size, patch_size)
    sex = torch.ones(n_patches)
    model(x, sex)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x, sex)
        times.append(time.perf_counter() - t0)
    return {"model": name, "parameters": int(params), "memory_bytes": int(mem),
            "memory_mb": round(mem / 2**20, 2), "file_bytes": int(file_bytes),
            "file_mb": round(file_bytes / 2**20, 2), "cpu_seconds_per_image": round(float(np.median(times)), 4),
            "patches": n_patches, "patch_size": patch_size, "threads": torch.get_num_threads()}


def complexity_table(names: Sequence[str] = PAPER_MODELS, **kwargs) -> list[dict]:
    """:func:`model_complexity` for each model."""
    return [model_complexity(n, **kwargs) for n in names]


def format_complexity(rows: list[dict]) -> str:
    """A text table of :func:`complexity_table` rows."""
    head = f"{'model':<16}{'parameters':>14}{'memory MB':>12}{'file MB':>10}{'CPU s/image':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<16}{r['parameters']:>14,}{r['memory_mb']:>12.2f}{r['file_mb']:>10.2f}"
                     f"{r['cpu_seconds_per_image']:>13.3f}")
    if rows:
        lines.append(f"(CPU time: {rows[0]['patches']} patches of {rows[0]['patch_size']}x"
                     f"{rows[0]['patch_size']} per image, {rows[0]['threads']} threads)")
    return "\n".join(lines)
