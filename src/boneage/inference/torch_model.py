"""The PyTorch side of model files: build, save and load the network, with the networks its
preprocessing steps need embedded beside its own tensors.

What needs no PyTorch (reading a file's recipe, info, interval and gate) is
:mod:`boneage.inference.modelfile`'s; the light install never imports this module.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from boneage import embedded
from boneage.config import Recipe
from boneage.errors import BoneAgeError, InputError
from boneage.fileutils import atomic_path, file_hash
from boneage.inference.modelfile import (
    FORMAT_VERSION, _STEP_SECTIONS, _metadata, _portable, read_model_metadata,
)
from boneage.inference.quality import TENSOR_PREFIX
from boneage.models import create_model
from boneage.models.enhancer import EnhancementGenerator, enhance, load_enhancer
from boneage.models.segmenter import Segmenter, create_segmenter, mask_crop
from boneage.models.unet import HandUNet, load_hand_unet, unet_crop
from boneage.registry import Registry
from boneage.transforms import TRANSFORMS, build_pipeline, build_transform
from boneage.transforms.classes import NETWORK_RUNNERS, NetworkRunner

def tensors_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """A content hash of named tensors (names, dtypes, shapes and bytes), as hex."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()



#: Builders of the networks a preprocessing step may need, by the step class's ``subnetwork``.
SUBNETWORKS: Registry = Registry("sub-network")


@SUBNETWORKS.register("hand_unet")
def _hand_unet(**options) -> torch.nn.Module:
    return HandUNet(**options)


@SUBNETWORKS.register("segmenter")
def _segmenter(model: str, options: dict) -> torch.nn.Module:
    return Segmenter(model, options)


@SUBNETWORKS.register("enhancer")
def _enhancer(**options) -> torch.nn.Module:
    return EnhancementGenerator(**options)


def _embed_subnetworks(recipe: Recipe) -> tuple[Recipe, dict[str, torch.Tensor], dict[str, dict]]:
    """A copy of ``recipe`` whose network-backed steps name embedded networks, their tensors
    (keys ``<section>.<index>.<name>``) and what rebuilds them."""
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
            ref = embedded.register(net, tensors_hash(net.state_dict()))
            subnets[key] = {"kind": kind, "options": net.options(), "ref": ref}
            step["weights"] = ref
    return stored, tensors, subnets


def save_model_file(path: str | Path, model: torch.nn.Module, recipe: Recipe,
                    info: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights, ``recipe`` and free-form ``info`` to one file, embedding
    the networks the recipe's steps need and leaving no path of this machine in it."""
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


def build_model(recipe: Recipe, **extra) -> torch.nn.Module:
    """The recipe's model, freshly initialised."""
    options = dict(recipe.model.options)
    options.update(extra)
    options.setdefault("in_chans", recipe.input_spec()[0])
    return create_model(recipe.model.name, **options)


def _load_subnetworks(path: Path, state: dict[str, torch.Tensor], subnets: dict[str, dict]) -> None:
    for key, spec in subnets.items():
        prefix = key + "."
        own = {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        try:
            net = SUBNETWORKS.create(spec["kind"], where=f"embedded network {key}", **spec["options"])
            net.load_state_dict(own)
        except (RuntimeError, KeyError, TypeError, BoneAgeError) as exc:
            raise InputError(f"embedded network {key} does not fit its description "
                             f"({str(exc).splitlines()[0]})", path) from None
        ref = embedded.register(net.eval(), tensors_hash(net.state_dict()))
        if ref != spec["ref"]:
            raise InputError(f"embedded network {key} is damaged (its weights do not match their hash)", path)


#: Tensors of a model file that are not the network's weights (the quality gate's, read by
#: :func:`~boneage.inference.modelfile.load_model_extras`).
_EXTRA_PREFIXES = ("quality.",)


def read_weights(path: str | Path, *, embedded: bool = True) -> dict:
    """The network's tensors in a model file, without the quality gate's (so a calibrated
    file can initialise training as well as an uncalibrated one).

    ``embedded=False`` also leaves out the networks embedded for preprocessing (a hand
    segmenter, an enhancer): a recipe that starts from this file builds its own from its
    preprocess steps, so only the model's own weights can initialise it.
    """
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


def add_to_model_file(src: str | Path, dst: str | Path, *, gate=None, calibration=None,
                      info_update: dict | None = None, inference_update: dict | None = None,
                      preprocess: list | None = None) -> Path:
    """Copy a model file, adding (or replacing) its quality gate, interval calibration and
    info entries; the weights are unchanged. ``inference_update`` replaces keys of the
    recipe's ``inference`` section (how predictions are made from the same weights, e.g.
    ``preprocess_views``) and ``preprocess`` the recipe's deterministic preprocessing steps;
    without either the bone ages are unchanged too."""
    meta = dict(_metadata(src))
    tensors = load_file(str(src), device="cpu")
    if gate is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(TENSOR_PREFIX)}
        tensors.update({k: torch.from_numpy(v) for k, v in gate.to_tensors().items()})
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




def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The network of a segmentation model file, in eval mode, and the file's info.

    Raises:
        InputError: the file is missing, not a model file, not a segmentation model, or its
            weights do not fit its recipe.
    """
    recipe, info = read_model_metadata(path)
    if recipe.task != "segmentation":
        raise InputError(f"not a segmentation model (its recipe's task is {recipe.task!r})", path)
    net = create_segmenter(recipe.model.name, **recipe.model.options)
    try:
        net.load_state_dict(read_weights(path))
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the recipe's segmentation network ({str(exc).splitlines()[0]})",
                         path) from None
    return net.to(device).eval(), {**info, "model_sha256": file_hash(path), "model_name": recipe.model.name}


def _load_segmenter_step(path: str) -> Segmenter:
    net, info = load_segmenter(path)
    return Segmenter.wrap(info["model_name"], net)


# The network-backed preprocessing steps (boneage.transforms) run their networks through these.
NETWORK_RUNNERS.add("hand_unet", NetworkRunner(load=load_hand_unet, run=unet_crop))
NETWORK_RUNNERS.add("segmenter", NetworkRunner(load=_load_segmenter_step, run=mask_crop))
NETWORK_RUNNERS.add("enhancer", NetworkRunner(load=load_enhancer, run=enhance))
