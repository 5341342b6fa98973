"""Model files: safetensors weights with the full recipe embedded in the header metadata.

One file alone rebuilds the model, its preprocessing (including any network a
preprocessing step needs, embedded beside the model's own tensors) and its target scaling,
so it reproduces its predictions in any folder on any machine. The stored recipe holds no
path of the training machine: where the training data lay and which file training started
from are kept as names and hashes in the file's info. Writing goes through a temporary file
and ``os.replace`` so an interrupted save never leaves a truncated model behind.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open

from boneage.config import Recipe
from boneage.errors import InputError
from boneage.fileutils import file_hash, read_safetensors_metadata
from boneage.inference.interval import ConformalCalibration
from boneage.inference.onnx_model import read_onnx_model_metadata
from boneage.inference.quality import TENSOR_PREFIX, QualityGate

# This module reads a model file's recipe, info, interval and gate without PyTorch (``boneage
# info``, the service's model page, the light install); building, loading and writing the
# network is :mod:`boneage.inference.torch_model`'s.

FORMAT_VERSION = "1"
#: Recipe sections whose steps may carry a network of their own.
_STEP_SECTIONS = ("preprocess", "canonical")

def _portable(recipe: Recipe, info: dict[str, Any]) -> tuple[Recipe, dict[str, Any]]:
    """Move the training machine's paths out of the recipe into names (and hashes) in info."""
    recipe, info = copy.deepcopy(recipe), dict(info)
    d = recipe.data
    where = d.root or d.csv or d.image_dir
    if where and "training_data" not in info:
        info["training_data"] = Path(str(where).rstrip("/")).name
    d.root, d.csv, d.image_dir, d.mask_dir = "", None, None, None
    if recipe.train.init_from:
        path = Path(recipe.train.init_from)
        if path.is_file() and "init_from" not in info:
            info["init_from"] = {"file": path.name, "sha256": file_hash(path)}
        recipe.train.init_from = None
    return recipe, info


def _metadata(path: str | Path) -> dict[str, str]:
    meta = read_safetensors_metadata(path, "model file")
    if meta.get("boneage_format") != FORMAT_VERSION or "recipe" not in meta:
        raise InputError("not a boneage model file (no embedded recipe)", path)
    return meta


def read_model_metadata(path: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and info stored in a model file (or an ONNX export of one, whose info also
    names its ``source_model``), without loading the weights."""
    if Path(path).suffix.lower() == ".onnx":
        return read_onnx_model_metadata(path)
    meta = _metadata(path)
    try:
        recipe = Recipe.from_dict(json.loads(meta["recipe"]))
        info = json.loads(meta.get("info", "{}"))
    except (ValueError, TypeError) as exc:
        raise InputError(f"broken model metadata: {str(exc).splitlines()[0]}", path) from None
    return recipe, info



def load_model_extras(path: str | Path):
    """``(QualityGate or None, ConformalCalibration or None)`` stored in a model file by
    :func:`add_to_model_file` (files written before them carry neither)."""
    meta = _metadata(path)
    gate = calibration = None
    try:
        if "interval" in meta:
            calibration = ConformalCalibration.from_dict(json.loads(meta["interval"]))
        if "quality" in meta:
            with safe_open(str(path), framework="np") as fh:
                tensors = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(TENSOR_PREFIX)}
            gate = QualityGate.from_stored(tensors, meta["quality"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"broken calibration or quality gate in the model file ({str(exc).splitlines()[0]})", path) from None
    return gate, calibration


def validation_mae(info: dict[str, Any]) -> tuple[float, str] | None:
    """The model's validation MAE in months and what it was measured on, or None.

    ``info["validation"]`` (:func:`validation_record`) when the file has one: measured on the
    held-back images with the file's inference as it is now, after any change to its views or
    preprocessing since training. Else ``info["val_mae"]``, training's score of its best
    epoch. ``boneage info``, the service's model page and the README quote this one number.
    """
    record = info.get("validation") or {}
    if record.get("mae_months") is not None:
        return float(record["mae_months"]), (f"{record.get('n', '?')} held-back images of "
                                             f"{record.get('data', '?')}, as it predicts now")
    if info.get("val_mae") is not None:
        return float(info["val_mae"]), f"best epoch {info.get('epoch', '?')} of training"
    return None


def validation_record(summary: dict[str, Any], data: str) -> dict[str, Any]:
    """``info["validation"]`` from a summary of :func:`boneage.api.evaluate` on the images
    the model held back (``holdout=True``) in the folder named ``data``; store it with
    :func:`add_to_model_file` (``info_update={"validation": ...}``) whenever the file's
    inference changes, so that every place quoting the MAE quotes the model as it predicts."""
    return {"mae_months": round(float(summary["mae"]), 3),
            "mae_male_months": round(float(summary["mae_male"]), 3),
            "mae_female_months": round(float(summary["mae_female"]), 3),
            "n": int(summary["n"]), "data": data, "date": datetime.date.today().isoformat()}


def describe_model_file(path: str | Path, recipe: Recipe, info: dict[str, Any]) -> str:
    """A few readable lines about a model file (``boneage info``)."""
    path = Path(path)
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d")
    lines = [f"model        {recipe.name} ({recipe.model.name}, {recipe.task})",
             f"file         {path} ({path.stat().st_size / 2**20:.1f} MB, sha256 {file_hash(path)[:16]})",
             f"written      {info.get('date', mtime)}"]
    data = info.get("training_data")
    if data or "n_train" in info:
        lines.append(f"trained on   {data or '?'}: {info.get('n_train', '?')} images, "
                     f"{info.get('n_val', '?')} held back")
    measured = validation_mae(info)
    if measured is not None:
        lines.append(f"validation   MAE {measured[0]:.2f} months ({measured[1]})")
    if info.get("val_dice") is not None:
        lines.append(f"validation   Dice {info['val_dice']:.3f} (best epoch {info.get('epoch', '?')})")
    source = info.get("source_model")
    if source:
        lines.append(f"exported from {source.get('file')} (sha256 {source.get('sha256', '')[:16]}); "
                     f"runs in onnxruntime")
    if info.get("init_from"):
        lines.append(f"started from {info['init_from'].get('file')} (sha256 {info['init_from'].get('sha256', '')[:16]})")
    inf = recipe.inference
    views = (1 + len(inf.tta_angles)) * (2 if inf.flip_tta else 1)
    if recipe.task == "segmentation":
        lines.append("inference    a hand mask per image (Otsu's threshold on the probability map)")
    elif recipe.task == "regression":
        if recipe.model.name == "per_sex":  # its networks have no sex branch: sex picks the network
            sex = f"a male and a female {recipe.model.options.get('model', '?')}, chosen by sex"
        else:
            sex = f"sex {'used' if recipe.model.options.get('sex_units', 1) else 'not used'}"
        copies = len(inf.preprocess_views)
        extra = f" of each of up to {copies + 1} copies of a large radiograph" if copies else ""
        lines.append(f"inference    {views} view(s){extra}, {inf.aggregate}; {sex}")
    calibration = info.get("calibration")
    if calibration:
        lines.append(f"interval     {calibration.get('level', 0):.0%}, calibrated on {calibration.get('n_calibration', '?')} "
                     f"held-back images; coverage {calibration.get('coverage', float('nan')):.1%} on "
                     f"{calibration.get('n_test', '?')} others")
    gate = info.get("quality_gate")
    if gate:
        lines.append(f"quality gate accepts {gate.get('accepted_test', float('nan')):.1%} of held-back radiographs, "
                     f"rejects {gate.get('rejected_test_negatives', float('nan')):.1%} of unseen non-radiographs")
    if recipe.description:
        lines.append(f"about        {' '.join(recipe.description.split())}")
    return "\n".join(lines)
