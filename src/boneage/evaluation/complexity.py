"""Space and time complexity of models, as in the patch paper's tables 3 and 4."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from boneage.config import Recipe
from boneage.inference.torch_model import save_model_file
from boneage.models import create_model
from boneage.models.inception_v3_scaled import PAPER_VARIANTS

PAPER_MODELS = ("resnet18", "resnet18_cbam", "resnet18_channel_attention", "inception_v4")


@torch.no_grad()
def model_complexity(name: str, *, in_chans: int = 1, patch_size: int = 224, n_patches: int = 25,
                     repeats: int = 3, options: dict | None = None, threads: int | None = None,
                     timed: bool = True) -> dict:
    """Parameters, memory, model-file size and CPU inference time per image (all its patches).

    Memory is the bytes of parameters and buffers; the file size is that of a real model file
    (safetensors + recipe); the time is the median of ``repeats`` timed forward passes of one
    image's ``n_patches`` patches as one batch, after one warm-up pass. ``timed=False``
    counts parameters and memory only (on PyTorch's meta device: no weights are allocated),
    leaving the file size and time None.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if threads:
        torch.set_num_threads(threads)
    with torch.device("cpu" if timed else "meta"):
        model = create_model(name, in_chans=in_chans, **(options or {})).eval()
    params = sum(p.numel() for p in model.parameters())
    mem = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if not timed:
        return {"model": name, "parameters": int(params), "memory_bytes": int(mem),
                "memory_mb": round(mem / 2**20, 2), "file_bytes": None, "file_mb": None,
                "cpu_seconds_per_image": None, "patches": n_patches, "patch_size": patch_size,
                "threads": None}
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


def boneagenet_variants(*, size: int = 300, timed: bool = False, repeats: int = 3) -> list[dict]:
    """:func:`model_complexity` of the rows of the BoneAgeNet paper's table 1 (one ``size``
    px image each), with the parameter count the paper gives (``paper_parameters``)."""
    rows = []
    for variant, spec in PAPER_VARIANTS.items():
        row = model_complexity("inception_v3_scaled", options=spec["options"], patch_size=size, n_patches=1,
                               repeats=repeats, timed=timed)
        row.update(model=f"boneagenet {variant}", options=spec["options"],
                   paper_parameters=int(spec["paper_parameters"]))
        rows.append(row)
    return rows


def format_complexity(rows: list[dict]) -> str:
    """A text table of :func:`complexity_table` (or :func:`boneagenet_variants`) rows."""
    def num(v, spec):
        return "–" if v is None else format(v, spec)

    wide = max([16] + [len(r["model"]) + 2 for r in rows])
    paper = any("paper_parameters" in r for r in rows)
    head = (f"{'model':<{wide}}{'parameters':>14}" + (f"{'paper':>8}" if paper else "")
            + f"{'memory MB':>12}{'file MB':>10}{'CPU s/image':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cited = f"{r['paper_parameters'] / 1e6:>7.0f}M" if paper and "paper_parameters" in r else (" " * 8 if paper else "")
        lines.append(f"{r['model']:<{wide}}{r['parameters']:>14,}{cited}{r['memory_mb']:>12.2f}"
                     f"{num(r['file_mb'], '>10.2f'):>10}{num(r['cpu_seconds_per_image'], '>13.3f'):>13}")
    timed = [r for r in rows if r["cpu_seconds_per_image"] is not None]
    if timed:
        lines.append(f"(CPU time: {timed[0]['patches']} patches of {timed[0]['patch_size']}x"
                     f"{timed[0]['patch_size']} per image, {timed[0]['threads']} threads)")
    if len(timed) < len(rows):
        lines.append("(–: not timed; parameters and memory counted without building the weights)")
    if paper:
        lines.append("(paper: the BoneAgeNet paper's table 1, rounded; its ~28M baseline disagrees with "
                     "Keras's 21.8M Inception-v3, which the other rows fit: docs/boneagenet.md)")
    return "\n".join(lines)
