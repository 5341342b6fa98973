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
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boneage.config import Recipe
from boneage.errors import BoneAgeError, InputError
from boneage.fileutils import atomic_path, read_safetensors_metadata
from boneage.registry import Registry

if TYPE_CHECKING:
    import torch

# PyTorch is imported where weights are built or read, not here: reading a model file's
# recipe and info (``boneage info``, the service's model page, an ONNX export's metadata) works
# in the light install, which has no PyTorch.

FORMAT_VERSION = "1"
#: Recipe sections whose steps may carry a network of their own.
_STEP_SECTIONS = ("preprocess", "canonical")

#: Builders of the networks a preprocessing step may need, by the step class's ``subnetwork``.
SUBNETWORKS: Registry = Registry("sub-network")


@SUBNETWORKS.register("hand_unet")
def _hand_unet(**options) -> torch.nn.Module:
    from boneage.segmentation.unet import HandUNet

    return HandUNet(**options)


@SUBNETWORKS.register("segmenter")
def _segmenter(model: str, options: dict) -> torch.nn.Module:
    from boneage.segmentation.networks import Segmenter

    return Segmenter(model, options)


@SUBNETWORKS.register("enhancer")
def _enhancer(**options) -> torch.nn.Module:
    from boneage.enhancement.networks import EnhancementGenerator

    return EnhancementGenerator(**options)


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex: the identity of a model file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _embed_subnetworks(recipe: Recipe) -> tuple[Recipe, dict[str, torch.Tensor], dict[str, dict]]:
    """A copy of ``recipe`` whose network-backed steps name embedded networks, their tensors
    (keys ``<section>.<index>.<name>``) and what rebuilds them."""
    from boneage.transforms import TRANSFORMS, build_transform

    from boneage import embedded

    stored = copy.deepcopy(recipe)
    tensors: dict[str, torch.Tensor] = {}
    subnets: dict[str, dict] = {}
    for section in _STEP_SECTIONS:
        for i, step in enumerate(getattr(stored, section)):
            if not isinstance(step, dict) or step.get("name") not in TRANSFORMS:
                continue
            kind = getattr(TRANSFORMS.get(step["name"]), "subnetwork", None)
            if kind is None:
                continue
            net = build_transform(step).network()
            key = f"{section}.{i}"
            tensors.update({f"{key}.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
            ref = embedded.register(net)
            subnets[key] = {"kind": kind, "options": net.options(), "ref": ref}
            step["weights"] = ref
    return stored, tensors, subnets


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


def save_model_file(path: str | Path, model: torch.nn.Module, recipe: Recipe,
                    info: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights, ``recipe`` and free-form ``info`` to one file, embedding
    the networks the recipe's steps need and leaving no path of this machine in it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored, extra, subnets = _embed_subnetworks(recipe)
    stored, info = _portable(stored, info or {})
    info.setdefault("date", datetime.date.today().isoformat())
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    clash = sorted(set(tensors) & set(extra))
    if clash:  # pragma: no cover - model keys never start with a recipe section name
        raise RuntimeError(f"model tensors clash with embedded networks: {clash[:3]}")
    tensors.update(extra)
    meta = {"boneage_format": FORMAT_VERSION,
            "recipe": json.dumps(stored.to_dict()),
            "info": json.dumps(info),
            "subnetworks": json.dumps(subnets)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _metadata(path: str | Path) -> dict[str, str]:
    meta = read_safetensors_metadata(path, "model file")
    if meta.get("boneage_format") != FORMAT_VERSION or "recipe" not in meta:
        raise InputError("not a boneage model file (no embedded recipe)", path)
    return meta


def read_model_metadata(path: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and info stored in a model file (or an ONNX export of one, whose info also
    names its ``source_model``), without loading the weights."""
    if Path(path).suffix.lower() == ".onnx":
        from boneage.inference.onnx_model import read_onnx_model_metadata

        return read_onnx_model_metadata(path)
    meta = _metadata(path)
    try:
        recipe = Recipe.from_dict(json.loads(meta["recipe"]))
        info = json.loads(meta.get("info", "{}"))
    except (ValueError, TypeError) as exc:
        raise InputError(f"broken model metadata: {str(exc).splitlines()[0]}", path) from None
    return recipe, info


def build_model(recipe: Recipe, **extra) -> torch.nn.Module:
    """The recipe's model, freshly initialised."""
    from boneage.models import create_model

    options = dict(recipe.model.options)
    options.update(extra)
    options.setdefault("in_chans", recipe.input_spec()[0])
    return create_model(recipe.model.name, **options)


def _load_subnetworks(path: Path, state: dict[str, torch.Tensor], subnets: dict[str, dict]) -> None:
    from boneage import embedded

    for key, spec in subnets.items():
        prefix = key + "."
        own = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        try:
            net = SUBNETWORKS.create(spec["kind"], where=f"embedded network {key}", **spec["options"])
            net.load_state_dict(own)
        except (RuntimeError, KeyError, TypeError, BoneAgeError) as exc:
            raise InputError(f"embedded network {key} does not fit its description "
                             f"({str(exc).splitlines()[0]})", path) from None
        ref = embedded.register(net.eval())
        if ref != spec["ref"]:
            raise InputError(f"embedded network {key} is damaged (its weights do not match their hash)", path)


#: Tensors of a model file that are not the network's weights (the quality gate's, read by
#: :func:`load_model_extras`).
_EXTRA_PREFIXES = ("quality.",)


def read_weights(path: str | Path, *, embedded: bool = True) -> dict:
    """The network's tensors in a model file, without the quality gate's (so a calibrated
    file can initialise training as well as an uncalibrated one).

    ``embedded=False`` also leaves out the networks embedded for preprocessing (a hand
    segmenter, an enhancer): a recipe that starts from this file builds its own from its
    preprocess steps, so only the model's own weights can initialise it.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise InputError(f"cannot read the weights: {str(exc).splitlines()[0]}", path) from None
    skip = _EXTRA_PREFIXES
    if not embedded:
        skip += tuple(key + "." for key in json.loads(_metadata(path).get("subnetworks", "{}")))
    return {k: v for k, v in state.items() if not k.startswith(skip)}


def load_model_file(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, Recipe, dict[str, Any]]:
    """Rebuild the model from a file: ``(model in eval mode, recipe, info)``.

    ``info`` gains ``model_sha256``, the hash of the file's bytes (the model's identity).
    """
    path = Path(path)
    recipe, info = read_model_metadata(path)
    subnets = json.loads(_metadata(path).get("subnetworks", "{}"))
    # Pretrained initialisation is pointless (and may need a file) when weights follow.
    model = build_model(recipe, **({"pretrained": None} if "pretrained" in recipe.model.options else {}))
    state = read_weights(path)
    _load_subnetworks(path, state, subnets)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the recipe's model ({str(exc).splitlines()[1:2] or exc})", path) from None
    if missing or unexpected:
        raise InputError(f"weights do not match the recipe's model (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    info = {**info, "model_sha256": file_hash(path)}
    return model.to(device).eval(), recipe, info


def load_model_extras(path: str | Path):
    """``(QualityGate or None, ConformalCalibration or None)`` stored in a model file by
    :func:`add_to_model_file` (files written before them carry neither)."""
    from safetensors import safe_open

    from boneage.inference.interval import ConformalCalibration
    from boneage.inference.quality import TENSOR_PREFIX, QualityGate

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


def add_to_model_file(src: str | Path, dst: str | Path, *, gate=None, calibration=None,
                      info_update: dict | None = None, inference_update: dict | None = None,
                      preprocess: list | None = None) -> Path:
    """Copy a model file, adding (or replacing) its quality gate, interval calibration and
    info entries; the weights are unchanged. ``inference_update`` replaces keys of the
    recipe's ``inference`` section (how predictions are made from the same weights, e.g.
    ``preprocess_views``) and ``preprocess`` the recipe's deterministic preprocessing steps;
    without either the bone ages are unchanged too."""
    from safetensors.torch import load_file, save_file

    from boneage.inference.quality import TENSOR_PREFIX
    from boneage.transforms import build_pipeline

    meta = dict(_metadata(src))
    tensors = load_file(str(src), device="cpu")
    if gate is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(TENSOR_PREFIX)}
        tensors.update(gate.to_tensors())
        meta["quality"] = gate.to_metadata()
    if calibration is not None:
        meta["interval"] = json.dumps(calibration.to_dict())
    if info_update:
        meta["info"] = json.dumps({**json.loads(meta.get("info", "{}")), **info_update})
    if inference_update or preprocess is not None:
        data = json.loads(meta["recipe"])
        data["inference"] = {**data.get("inference", {}), **(inference_update or {})}
        if preprocess is not None:
            data["preprocess"] = list(preprocess)
        recipe = Recipe.from_dict(data)  # validated as any recipe, its steps built once
        for steps in (recipe.preprocess, *recipe.inference.preprocess_views):
            build_pipeline(steps)
        meta["recipe"] = json.dumps(recipe.to_dict())
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return dst


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
    import os

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
