"""Export a boneage model file to ONNX (:mod:`boneage.inference.onnx_model` runs the result),
and check that the two runtimes agree. Exporting needs PyTorch and onnx (the ``train`` extra)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from boneage.config import Recipe
from boneage.data.synthetic import make_radiograph
from boneage.errors import InputError
from boneage.fileutils import atomic_path, file_hash
from boneage.inference.modelfile import _metadata, load_model_extras
from boneage.inference.onnx_model import INPUT_NAMES, ONNX_FORMAT, OUTPUT_NAMES, OnnxPredictor, gate_to_json
from boneage.inference.predictor import Predictor, default_model_path
from boneage.inference.quality import image_features
from boneage.inference.torch_model import load_model_file
from boneage.inference.torch_predictor import TorchPredictor
from boneage.transforms import TRANSFORMS


def _view_shape(model, recipe: Recipe) -> tuple[int, int]:
    """(h, w) of the views the network sees, from running the recipe on a made-up image."""
    rng = np.random.default_rng(0)
    predictor = TorchPredictor(model, recipe)
    views = predictor.views(rng.random((256, 256), dtype=np.float32))
    return int(views.shape[-2]), int(views.shape[-1])


def _resolved_recipe(recipe: Recipe, stored: str) -> dict:
    """The stored recipe with its input spec (channels, mean, std) written out: the runner
    then needs no model registry, which is PyTorch code, to know what the graph is fed."""
    d = json.loads(stored)
    d["channels"], d["input_mean"], d["input_std"] = recipe.input_spec()
    return d


def _network_steps(recipe: Recipe) -> list[str]:
    """Names of the recipe's steps that run a network of their own (not in the ONNX graph)."""
    sections = [("preprocess", recipe.preprocess), ("canonical", recipe.canonical)]
    sections += [("inference.preprocess_views", steps) for steps in recipe.inference.preprocess_views]
    out = []
    for section, steps in sections:
        for step in steps:
            name = step.get("name") if isinstance(step, dict) else None
            if name in TRANSFORMS and getattr(TRANSFORMS.get(name), "subnetwork", None) is not None:
                out.append(f"{section}: {name}")
    return out


def export_onnx(model_path: str | Path | None, out: str | Path, *, opset: int | None = None,
                dynamo: bool = True) -> Path:
    """Write the model file ``model_path`` (the bundled model for None) as ONNX to ``out``.

    ``opset``: the ONNX opset (default: the exporter's own, which onnxruntime runs).
    ``dynamo``: PyTorch's torch.export-based exporter (the default since PyTorch 2.9); False
    uses the older TorchScript exporter, deprecated but several times faster to export.
    Returns ``out``. Recipes with a network inside their preprocessing (``unet_crop``) are
    refused: that network would not be in the graph.
    """
    model_path = default_model_path("torch") if model_path is None else Path(model_path)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the ONNX file's name must end in .onnx, got {out.name!r}", out)
    model, recipe, info = load_model_file(model_path)
    inside = _network_steps(recipe)
    if inside:
        raise InputError(f"cannot export: the recipe's preprocessing runs a network of its own "
                         f"({', '.join(inside)}), which the ONNX graph would not carry", model_path)
    if not hasattr(model, "head"):  # e.g. per_sex: two networks chosen by sex, not one graph
        raise InputError(f"cannot export: the model ({recipe.model.name}) is not one network with "
                         "one head, which the ONNX graph and its quality-gate features need", model_path)
    gate, calibration = load_model_extras(model_path)
    meta_src = _metadata(model_path)
    uses_sex = bool(getattr(model.head, "uses_sex", True))

    class _AgeAndFeatures(torch.nn.Module):
        # One graph, two outputs: the age and the pooled features the gate reads, so the
        # ONNX file alone serves both (and the features are not computed twice per view).
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, sex):
            features = self.net.pool(self.net.forward_features(x))
            return self.net.head(features, sex), features

    wrapper = _AgeAndFeatures(model).eval()
    h, w = _view_shape(model, recipe)
    channels = recipe.input_spec()[0]
    # A batch of 2 at export: a batch of 1 may let the exporter treat the axis as constant.
    args = (torch.zeros(2, channels, h, w), torch.tensor([1.0, 0.0]))
    out.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"input_names": list(INPUT_NAMES), "output_names": list(OUTPUT_NAMES)}
    if opset is not None:
        kwargs["opset_version"] = int(opset)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # The exporters warn about their own internals (deprecations, dynamic-shape renames)
        # on every export; nothing a user of this command can act on.
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(wrapper, args, str(tmp), dynamo=True, external_data=False,
                              dynamic_shapes={"x": {0: batch}, "sex": {0: batch}}, verbose=False,
                              **kwargs)
        else:
            torch.onnx.export(wrapper, args, str(tmp), dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in INPUT_NAMES + OUTPUT_NAMES},
                              **kwargs)
        proto = onnx.load(str(tmp))
        props = {"boneage_format": ONNX_FORMAT,
                 "recipe": json.dumps(_resolved_recipe(recipe, meta_src["recipe"])),
                 "info": meta_src.get("info", "{}"),
                 "source_model": json.dumps({"file": model_path.name, "sha256": file_hash(model_path)}),
                 "uses_sex": json.dumps(uses_sex)}
        if calibration is not None:
            props["interval"] = json.dumps(calibration.to_dict())
        if gate is not None:
            props["quality"] = gate_to_json(gate)
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "boneage"
        onnx.save(proto, str(tmp))
    return out


def add_to_onnx_file(src: str | Path, dst: str | Path, *, info_update: dict | None = None,
                     source_model: str | Path | None = None) -> Path:
    """Copy an exported ONNX file, adding (or replacing) entries of its info and, given the
    model file it now stands for (e.g. after :func:`~boneage.inference.torch_model.add_to_model_file`
    changed that file's info), its ``source_model`` name and hash; the graph is unchanged."""
    proto = onnx.load(str(src))
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if props.get("boneage_format") != ONNX_FORMAT:
        raise InputError("an ONNX model without boneage metadata; write one with `boneage export`", src)
    if info_update:
        props["info"] = json.dumps({**json.loads(props.get("info", "{}")), **info_update})
    if source_model is not None:
        props["source_model"] = json.dumps({"file": Path(source_model).name, "sha256": file_hash(source_model)})
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
    return Path(dst)


def compare_backends(torch_predictor: Predictor, onnx_predictor: Predictor, images, sexes) -> dict:
    """How far the ONNX predictor's bone ages (months) and gate features lie from the PyTorch
    predictor's on the same images: ``{"n", "max_abs_months", "mean_abs_months",
    "max_abs_feature"}``. Both go through ``predict_batch`` (views, TTA, aggregation)."""
    images = list(images)
    a = np.array([p.bone_age_months for p in torch_predictor.predict_batch(images, sexes)])
    b = np.array([p.bone_age_months for p in onnx_predictor.predict_batch(images, sexes)])
    fa, fb = image_features(torch_predictor, images), image_features(onnx_predictor, images)
    diff = np.abs(a - b)
    return {"n": len(images), "max_abs_months": float(diff.max()) if len(diff) else 0.0,
            "mean_abs_months": float(diff.mean()) if len(diff) else 0.0,
            "max_abs_feature": float(np.abs(fa - fb).max()) if fa.size else 0.0}


def synthetic_check(model_path: str | Path | None, onnx_path: str | Path, n: int = 4) -> dict:
    """:func:`compare_backends` of a model file and its ONNX export on ``n`` synthetic
    radiographs (both sexes, ages across the range): the check ``boneage export`` runs."""
    images = [make_radiograph(24.0 + 150.0 * i / max(n - 1, 1), "MF"[i % 2], size=256, seed=i).image
              for i in range(n)]
    sexes = ["MF"[i % 2] for i in range(n)]
    return compare_backends(TorchPredictor.from_file(model_path or default_model_path("torch")),
                            OnnxPredictor.from_file(onnx_path),
                            images, sexes)
