"""Grad-CAM and class activation maps: which parts of a radiograph raise the predicted bone age.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last feature map by the
spatial mean of the output's gradient with respect to it, sums the weighted channels and
keeps the positive part. Bone age is a regression, so the "class score" is the predicted
age itself: bright areas are those whose features push the estimate *up*. This is the kind
of focus-area map the SE-ResNet compression paper shows for the RSNA data (its figure 8).

Every :class:`boneage.models.head.BoneAgeModel` computes ``head(pool(forward_features(x)),
sex)``. The map is taken at the backbone's deepest feature map of half the final resolution
where the backbone can be split there (:func:`feature_split`: timm EfficientNets, the
bundled model's family): the last map of an EfficientNet at 112 px is 4 x 4 cells, each a
quarter of the image, and its peak fell on background beside the wrist; at stride 16 (7 x 7)
the map lands on the hand. A backbone may also say where to cut itself (``gradcam_split``:
BoneAgeNet's Inception-v3, before its last grid reduction: 17 x 17 cells at 300 px, 5 x 5 at
112 px instead of 8 x 8 and 2 x 2). Otherwise it is the last map, and only the head is
differentiated.
Either way: no hooks, and no gradients left on the model.

Class activation maps (CAM, Zhou et al., 2016), the BoneAgeNet paper's maps, are the exact
alternative for a model whose head follows global average pooling: with ``F`` the last
feature map and ``g`` the gradient of the output with respect to the pooled features, the
map is ``sum_c g_c F_c``, and the prediction is its spatial mean plus a term that does not
depend on where anything lies (sex branch, biases): :func:`cam_decomposition` returns both.
For a linear head ``g`` is the output layer's image weights, the same for every image; with
hidden ReLU layers (BoneAgeNet's extra FC layer) it is the head's linearisation at the
image's own pooled features, which is still exact at that image (a ReLU network is linear
where its active units do not change) but differs from image to image. The sex branch adds
the same amount to every location, so it is left out of the map and returned as the offset.
Unlike Grad-CAM, the map is signed (locations lowering the age are the darkest) and always
at the last feature map.

Public API::

    grad_cam(model, x, sex) -> (H, W) array in [0, 1]
    class_activation_map(model, x, sex) -> (H, W) array in [0, 1]
    cam_decomposition(model, x, sex) -> CamDecomposition (maps, offset, prediction)
    explain_image(predictor, image, sex, *, on="original", method="gradcam")
        -> (Prediction, heat map, image)
    preprocess_geometry(steps, image) -> PreprocessGeometry
    heatmap_to_original(heatmap, image, steps) -> heat map on the image as given
    overlay_rgb(image, heatmap, *, max_side=1024) -> (H, W, 3) uint8
    overlay_heatmap(image, heatmap, path, *, title=None) -> Path

The network sees a resized (and possibly cropped or padded) copy of the radiograph; a map
drawn on that copy shows the hand squashed, and its peak may sit on padding or background.
:func:`heatmap_to_original` undoes the recipe's preprocessing geometry so the map lies on the
radiograph at its own size and aspect ratio, which is what ``explain`` and the clinical report
show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from boneage.errors import InputError
from boneage.inference.predictor import Predictor
from boneage.inference.torch_predictor import TorchPredictor
from boneage.models.unet import unet_crop_box
from boneage.sex import Sex
from boneage.transforms import Compose, build_pipeline, classes as TC, functional as TF_, view_layout
from boneage.transforms.hull import convex_hull_box
from boneage.visualize import (
    HEATMAP_METHODS, MAX_ALPHA, OVERLAY_MAX_SIDE, fit_for_display, new_figure, overlay_rgb, save_figure,
)

__all__ = ["grad_cam", "class_activation_map", "cam_decomposition", "CamDecomposition",
           "explain_image", "preprocess_geometry", "heatmap_to_original", "overlay_rgb",
           "overlay_heatmap", "PreprocessGeometry", "METHODS"]

#: Heat-map methods of :func:`explain_image` (and ``boneage explain --method``).
METHODS = HEATMAP_METHODS



def _sex_tensor(sex, n: int, device) -> torch.Tensor | None:
    """A (n,) float tensor of 1 (male) / 0 (female) from a tensor, bool, number or 'M'/'F'."""

    if sex is None:
        return None
    if isinstance(sex, torch.Tensor):
        t = sex.to(device=device, dtype=torch.float32).reshape(-1)
        return t.expand(n) if t.numel() == 1 else t
    if isinstance(sex, str):
        sex = Sex.parse(sex).flag
    return torch.full((n,), float(sex), device=device)


def feature_split(model: torch.nn.Module):
    """``(pre, post)`` with ``post(pre(x)) == model.forward_features(x)``, split after the
    deepest block whose output has half the final map's resolution, or None when the
    backbone is not one we know how to split (then Grad-CAM uses the last map)."""
    bb = getattr(model, "backbone", None)
    if callable(getattr(bb, "gradcam_split", None)):  # a backbone that says where to cut itself
        return bb.gradcam_split()
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "feature_info")
    if bb is None or not all(hasattr(bb, n) for n in needed):
        return None
    info = bb.feature_info.get_dicts() if hasattr(bb.feature_info, "get_dicts") else list(bb.feature_info)
    final = max(d["reduction"] for d in info)
    finer = [d for d in info if d["reduction"] == final // 2 and d["module"].startswith("blocks.")]
    if not finer:
        return None
    cut = int(finer[-1]["module"].split(".")[1]) + 1

    def pre(x):
        h = bb.bn1(bb.conv_stem(x))
        for block in bb.blocks[:cut]:
            h = block(h)
        return h

    def post(h):
        for block in bb.blocks[cut:]:
            h = block(h)
        return bb.bn2(bb.conv_head(h))

    return pre, post


def _raw_cams(model: torch.nn.Module, x: torch.Tensor, sex) -> torch.Tensor:
    """Unnormalised Grad-CAM maps, shape (B, H, W) at the input's resolution.

    Kept unnormalised so that maps of several patches of one image stay on a common scale
    and can be averaged before the single final normalisation.
    """

    if x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    was_training = model.training
    # Eval mode: BatchNorm must use running statistics and dropout must be off, as at
    # inference; otherwise the map explains a different function than the one predicting.
    model.eval()
    split = feature_split(model)
    pre, post = split if split is not None else (model.forward_features, lambda h: h)
    try:
        with torch.no_grad():
            fmap = pre(x)
        if fmap.ndim != 4:
            raise ValueError(f"Grad-CAM needs a 4-D feature map, forward_features gave shape {tuple(fmap.shape)}")
        # A detached leaf is enough (the gradient w.r.t. the map only involves what follows
        # it); it also works for backbones without trainable parameters.
        fmap = fmap.detach().float().requires_grad_(True)
        with torch.enable_grad():
            out = model.head(model.pool(post(fmap)), _sex_tensor(sex, x.shape[0], x.device))
            # Each output depends only on its own sample (eval mode), so the gradient of the
            # sum gives every sample's own gradient in one backward pass.
            (grad,) = torch.autograd.grad(out.sum(), fmap)
    finally:
        model.train(was_training)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * fmap.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0]


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a flat map carries no localisation, so it becomes all zeros."""
    cam = np.asarray(cam, dtype=np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    if not np.isfinite(hi - lo) or hi - lo <= 1e-7 * max(1.0, abs(hi)):
        return np.zeros_like(cam)
    return np.clip((cam - lo) / (hi - lo), 0.0, 1.0)


def grad_cam(model: torch.nn.Module, x: torch.Tensor, sex=None) -> np.ndarray:
    """Grad-CAM of the predicted bone age for one input image.

    Args:
        model: a :class:`~boneage.models.head.BoneAgeModel` (anything with
            ``forward_features``, ``pool`` and ``head``). Its train/eval mode is restored.
        x: the network input, shape (1, C, H, W) or (C, H, W).
        sex: 1/True/'M' for male, 0/False/'F' for female, a tensor, or None for a model
            without the sex branch.

    Returns:
        float32 array (H, W) in [0, 1] at the input's resolution; all zeros when the map is
        flat (e.g. a constant image, or no feature raises the prediction).
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam explains one image: x must be (1, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return _normalise(_raw_cams(model, x, sex)[0].cpu().numpy())


@dataclass(frozen=True)
class CamDecomposition:
    """A prediction split into where it comes from: ``prediction == maps.mean((1, 2)) + offset``.

    ``maps``: (B, h, w) class activation maps at the last feature map's resolution, in the
    model's output units (scaled bone age); ``offset``: (B,) the part no location carries
    (sex branch, biases); ``prediction``: (B,) the model's output in eval mode.
    """

    maps: torch.Tensor
    offset: torch.Tensor
    prediction: torch.Tensor


def cam_decomposition(model: torch.nn.Module, x: torch.Tensor, sex=None) -> CamDecomposition:
    """Exact class activation maps of ``model`` (``head(pool(forward_features(x)), sex)`` with
    ``pool`` a global average) for a batch ``x`` (B, C, H, W); see the module docstring for
    how the sex branch and hidden layers are handled. Eval mode, restored afterwards; no
    gradients are left on the model."""

    if x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()  # BatchNorm statistics and no dropout: the function that predicts
    try:
        with torch.no_grad():
            fmap = model.forward_features(x).float()
        if fmap.ndim != 4:
            raise ValueError(f"CAM needs a 4-D feature map, forward_features gave shape {tuple(fmap.shape)}")
        pooled = model.pool(fmap)
        if not torch.allclose(pooled, fmap.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5):
            raise ValueError("CAM needs a model that global-average-pools its last feature map")
        pooled = pooled.detach().requires_grad_(True)
        with torch.enable_grad():
            out = model.head(pooled, _sex_tensor(sex, x.shape[0], x.device))
            # Each output depends only on its own sample's features (eval mode).
            (weights,) = torch.autograd.grad(out.sum(), pooled)
    finally:
        model.train(was_training)
    maps = torch.einsum("bc,bchw->bhw", weights, fmap)
    prediction = out.detach()
    return CamDecomposition(maps, prediction - maps.mean(dim=(1, 2)), prediction)


def _raw_class_maps(model: torch.nn.Module, x: torch.Tensor, sex) -> torch.Tensor:
    """Unnormalised CAMs (B, H, W) at the input's resolution (see :func:`_raw_cams`)."""

    maps = cam_decomposition(model, x, sex).maps[:, None]
    return F.interpolate(maps, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def _raw_maps(model: torch.nn.Module, x: torch.Tensor, sex, method: str) -> torch.Tensor:
    """Unnormalised maps of ``method`` (checked by :func:`explain_image`, the one caller)."""
    return (_raw_cams if method == "gradcam" else _raw_class_maps)(model, x, sex)


def class_activation_map(model: torch.nn.Module, x: torch.Tensor, sex=None) -> np.ndarray:
    """The class activation map of the predicted bone age for one input image.

    Same arguments as :func:`grad_cam`. Returns a float32 (H, W) array at the input's
    resolution, scaled from the location that lowers the prediction most (0) to the one
    that raises it most (1); all zeros for a flat map.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"class_activation_map explains one image: x must be (1, C, H, W) or (C, H, W), "
                         f"got {tuple(x.shape)}")
    return _normalise(_raw_class_maps(model, x, sex)[0].cpu().numpy())


def gradcam_predictor(predictor: Predictor) -> TorchPredictor:
    """The PyTorch predictor whose network Grad-CAM differentiates: ``predictor`` itself, or
    for an ONNX one (onnxruntime gives no gradients) the model file it was exported from,
    loaded on first use and kept on it (``predictor.gradcam_predictor``), so predictions stay
    in onnxruntime and PyTorch loads only when a heat map is asked for."""
    if isinstance(predictor, TorchPredictor):
        return predictor
    if predictor.gradcam_predictor is None:
        missing = predictor.gradcam_unavailable
        if missing is not None:
            raise InputError(missing, getattr(predictor, "path", None))
        predictor.gradcam_predictor = TorchPredictor.from_file(predictor.source_model_file(),
                                                               device=predictor.device)
    return predictor.gradcam_predictor


def explain_image(predictor, image: np.ndarray, sex, *, on: str = "original", method: str = "gradcam"):
    """Predict one radiograph and compute its heat map over the views it predicts from.

    Every view the Predictor uses (patches, rotated and mirrored test-time views) gets its
    map, which is put back where the view came from (mirrored back, rotated back, resized to
    its patch); overlapping maps are averaged. So the map explains the same views, with the
    same canonical preparation, as the prediction it is shown with.

    Args:
        predictor: a :class:`boneage.inference.Predictor`.
        image: the raw 2-D image in [0, 1].
        sex: 'M'/'F' (or anything :meth:`boneage.sex.Sex.parse` accepts).
        on: ``"original"`` (default): the map is carried back through the recipe's
            preprocessing onto ``image`` itself (see :func:`heatmap_to_original`);
            ``"preprocessed"``: the map on the preprocessed image the network's views come from.
        method: ``"gradcam"`` (default) or ``"cam"`` (exact class activation maps, see
            :func:`cam_decomposition`); the views' unnormalised maps are averaged, then scaled
            to [0, 1] once.

    Returns:
        ``(prediction, heatmap, background)``: the :class:`~boneage.inference.Prediction`,
        a float32 heat map in [0, 1] and the image it lies on, of the same shape: ``image``
        for ``on="original"``, the preprocessed image for ``on="preprocessed"``.
    """
    if on not in ("original", "preprocessed"):
        raise ValueError(f"on must be 'original' or 'preprocessed', got {on!r}")
    if method not in METHODS:
        raise ValueError(f"heat-map method must be one of {', '.join(METHODS)}, got {method!r}")
    predictor = gradcam_predictor(predictor)

    prediction = predictor.predict(image, sex)  # also validates sex and image shape
    recipe = predictor.recipe
    pre = predictor.preprocess(image)
    views = predictor.views_of_preprocessed(pre)
    layout = view_layout(pre.shape, (recipe.patches.n, recipe.patches.size) if recipe.patches else None,
                         recipe.inference.flip_tta, recipe.inference.tta_angles)
    # A per-sex model's estimate is one of its networks' (boneage.models.per_sex): explain that one.
    routed = getattr(predictor.model, "network_for", None)
    network = routed(prediction.sex.flag) if routed is not None else predictor.model
    maps = []
    for i in range(0, len(views), predictor.batch_size):
        x = predictor.to_input(views[i:i + predictor.batch_size])
        maps.append(_raw_maps(network, x, prediction.sex.flag, method).cpu().numpy())
    maps = np.concatenate(maps)
    h, w = pre.shape
    by_angle: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for spec, m in zip(layout, maps):
        if spec["flipped"]:
            m = m[:, ::-1]
        r, c, ph, pw = spec["box"]
        if m.shape != (ph, pw):  # the canonical preparation resized the view
            m = cv2.resize(np.ascontiguousarray(m), (pw, ph), interpolation=cv2.INTER_LINEAR)
        total, count = by_angle.setdefault(spec["angle"], (np.zeros((h, w)), np.zeros((h, w))))
        total[r:r + ph, c:c + pw] += m
        count[r:r + ph, c:c + pw] += 1
    heat_sum = np.zeros((h, w))
    weight = np.zeros((h, w))
    for angle, (total, count) in by_angle.items():
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        cover = (count > 0).astype(np.float32)
        if angle:
            # Rotate the map back onto the unrotated image; corners the view never saw get no weight.
            mean = TF_.rotate(mean.astype(np.float32), -angle)
            cover = TF_.rotate(cover, -angle)
        heat_sum += mean * cover
        weight += cover
    heat = _normalise(np.divide(heat_sum, weight, out=np.zeros_like(heat_sum), where=weight > 1e-6))
    if on == "preprocessed":
        return prediction, heat, pre
    image = np.asarray(image, dtype=np.float32)
    return prediction, heatmap_to_original(heat, image, recipe.preprocess), image


@dataclass(frozen=True)
class PreprocessGeometry:
    """Where each pixel of an image lands in its preprocessed copy.

    The steps a recipe can preprocess with (crops, squashing or padded resizes) are all
    axis-aligned, so the whole pipeline is one map per axis, in pixel-centre coordinates::

        row_pre = scale_y * row + offset_y        col_pre = scale_x * col + offset_x
    """

    scale_y: float
    offset_y: float
    scale_x: float
    offset_x: float
    shape: tuple[int, int]
    """(height, width) of the preprocessed image."""
    approximated: tuple[str, ...] = ()
    """Steps whose geometry is unknown and was taken as a plain resize to their output size."""

    def then(self, scale_y: float, offset_y: float, scale_x: float, offset_x: float,
             shape: tuple[int, int], approximated: str | None = None) -> "PreprocessGeometry":
        """This geometry followed by one more axis-aligned step."""
        return PreprocessGeometry(scale_y * self.scale_y, scale_y * self.offset_y + offset_y,
                                  scale_x * self.scale_x, scale_x * self.offset_x + offset_x,
                                  tuple(shape),
                                  self.approximated + ((approximated,) if approximated else ()))

    def to_preprocessed(self, row: float, col: float) -> tuple[float, float]:
        """Preprocessed (row, col) of an original pixel (row, col)."""
        return self.scale_y * row + self.offset_y, self.scale_x * col + self.offset_x


def _resize_step(shape_in, shape_out) -> tuple[float, float, float, float]:
    """Pixel-centre map of a resize from ``shape_in`` to ``shape_out`` (as cv2.resize does it:
    centres line up, ``x' = (x + 0.5) * s - 0.5``)."""
    sy, sx = shape_out[0] / shape_in[0], shape_out[1] / shape_in[1]
    return sy, 0.5 * sy - 0.5, sx, 0.5 * sx - 0.5


def _step_geometry(step, image: np.ndarray, out: np.ndarray):
    """``(scale_y, offset_y, scale_x, offset_x, approximated name or None)`` of one step that
    turned ``image`` into ``out``."""
    h, w = image.shape
    box = None
    if isinstance(step, TC.Resize) and step.mode == "pad":
        # The same arithmetic as functional.resize(mode="pad"): fit inside, centre, pad.
        th, tw = out.shape
        scale = min(th / h, tw / w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        sy, oy, sx, ox = _resize_step((h, w), (nh, nw))
        return sy, oy + (th - nh) // 2, sx, ox + (tw - nw) // 2, None
    if isinstance(step, (TC.Resize, TC.Resample, TC.LowpassResize)):
        return (*_resize_step((h, w), out.shape), None)
    if isinstance(step, TC.CropFractions):
        box = (int(round(h * step.top)), None, int(round(w * step.left)), None)
    elif isinstance(step, TC.ConvexHullCrop):
        box = convex_hull_box(image, threshold=step.threshold, margin=step.margin)
    elif isinstance(step, TC.UNetCrop):
        box = unet_crop_box(step.network(), image, margin=step.margin)
    elif out.shape == image.shape:
        # Intensity steps (CLAHE, stretch, normalise, ...) leave every pixel where it was.
        return 1.0, 0.0, 1.0, 0.0, None
    else:
        # A step whose geometry this module does not know: treat it as a resize of the whole
        # image to its output (exact for squashing steps, approximate for anything else).
        return (*_resize_step((h, w), out.shape), type(step).__name__)
    if box is None or out.shape == image.shape:  # the crop found nothing and kept the image
        return 1.0, 0.0, 1.0, 0.0, None
    return 1.0, -float(box[0]), 1.0, -float(box[2]), None


def preprocess_geometry(steps, image: np.ndarray) -> PreprocessGeometry:
    """The geometry of a recipe's preprocessing of ``image`` (see :class:`PreprocessGeometry`).

    ``steps`` is a recipe's ``preprocess`` list or a built pipeline. Each step is run on the
    image, because crops to the hand (``convex_hull_crop``, ``unet_crop``) depend on it.
    Resizes (squashing or padded), fraction crops and hand crops are inverted exactly;
    steps that keep the shape are taken as not moving pixels; any other step that changes the
    shape is approximated as a resize of its whole input and named in ``approximated``.
    """
    pipeline = steps if callable(steps) else build_pipeline(list(steps))
    transforms = pipeline.transforms if isinstance(pipeline, Compose) else [pipeline]
    current = np.asarray(image, dtype=np.float32)
    geometry = PreprocessGeometry(1.0, 0.0, 1.0, 0.0, current.shape)
    for step in transforms:
        out = step(current)
        sy, oy, sx, ox, approx = _step_geometry(step, current, out)
        geometry = geometry.then(sy, oy, sx, ox, out.shape, approx)
        current = out
    return geometry


def heatmap_to_original(heatmap: np.ndarray, image: np.ndarray, steps) -> np.ndarray:
    """Carry a heat map from the preprocessed image back onto ``image`` (its shape and aspect).

    Args:
        heatmap: 2-D map on the preprocessed image (any size: it is first resized to the
            preprocessed image's size, e.g. from the network's input size).
        image: the radiograph as given to the predictor (2-D, [0, 1]).
        steps: the recipe's ``preprocess`` list (or its built pipeline).

    Returns:
        float32 map of ``image.shape``; parts of the image the preprocessing cropped away
        (the network never saw them) are 0. Approximation: bilinear interpolation of the
        coarse map; steps of unknown geometry are taken as resizes (see
        :func:`preprocess_geometry`). Values are not renormalised, so a map whose
        peak lay on padding keeps its scale and shows the radiograph as less influential.
    """
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(f"image and heatmap must be 2-D, got shapes {image.shape} and {heatmap.shape}")
    geometry = preprocess_geometry(steps, image)
    ph, pw = geometry.shape
    if heatmap.shape != (ph, pw):
        heatmap = cv2.resize(heatmap, (pw, ph), interpolation=cv2.INTER_LINEAR)
    # WARP_INVERSE_MAP: the matrix maps each output (original) pixel to where it is sampled
    # in the source (preprocessed) map, which is exactly the forward preprocessing geometry.
    matrix = np.array([[geometry.scale_x, 0.0, geometry.offset_x],
                       [0.0, geometry.scale_y, geometry.offset_y]], dtype=np.float64)
    # Replicated border: original pixels along the edge sample up to half a preprocessed pixel
    # outside the map (pixel-centre geometry); a zero border would fade a band of edge pixels
    # many original pixels wide. What lies wholly outside the preprocessed image is zeroed below.
    out = cv2.warpAffine(heatmap, matrix, (image.shape[1], image.shape[0]),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    rows = geometry.scale_y * np.arange(image.shape[0]) + geometry.offset_y
    cols = geometry.scale_x * np.arange(image.shape[1]) + geometry.offset_x
    eps = 1e-6
    out[(rows < -0.5 - eps) | (rows > ph - 0.5 + eps), :] = 0.0  # cropped away: never seen
    out[:, (cols < -0.5 - eps) | (cols > pw - 0.5 + eps)] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike, *,
                    title: str | None = None) -> Path:
    """Write the radiograph in gray with the heat map over it as a PNG (atomically).

    Args:
        image: 2-D grayscale image in [0, 1] (e.g. the radiograph :func:`explain_image`
            returns); drawn at its own aspect ratio, shrunk to at most
            :data:`OVERLAY_MAX_SIDE` pixels per side.
        heatmap: 2-D map in [0, 1]; resized bilinearly if its shape differs from ``image``.
        path: destination PNG; its folder is created if needed.
        title: text above the image, e.g. the prediction.

    Returns:
        The written path.
    """
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(f"image and heatmap must be 2-D, got shapes {image.shape} and {heatmap.shape}")
    image, heatmap = fit_for_display(image, heatmap, OVERLAY_MAX_SIDE)
    h, w = image.shape
    # Size the figure to the image's aspect ratio so the radiograph is not letterboxed into
    # a tiny area; the extra width leaves room for the colour bar.
    height = 6.0
    fig: Figure = new_figure(width=min(14.0, max(4.0, height * w / h + 1.4)), height=height)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    cmap = colormaps["turbo"]
    heat = np.clip(heatmap, 0.0, 1.0)
    rgba = cmap(heat)
    # Opacity grows with the heat: a constant alpha would tint the whole radiograph with the
    # colour map's low end and hide exactly the anatomy the reader wants to compare against.
    rgba[..., 3] = MAX_ALPHA * np.sqrt(heat)
    ax.imshow(rgba, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("relative influence")
    return save_figure(fig, path)
