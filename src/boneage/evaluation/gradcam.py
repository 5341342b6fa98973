"""Grad-CAM heat maps: which parts of a radiograph raise the predicted bone age.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last feature map by the
spatial mean of the output's gradient with respect to it, sums the weighted channels and
keeps the positive part. Bone age is a regression, so the "class score" is the predicted
age itself: bright areas are those whose features push the estimate *up*. This is the kind
of focus-area map the SE-ResNet compression paper shows for the RSNA data (its figure 8).

Every :class:`boneage.models.head.BoneAgeModel` computes ``head(pool(forward_features(x)),
sex)``, so the feature map is obtained directly from ``forward_features`` and only the
head is differentiated: no hooks, and no gradients through (or left on) the backbone.

Public API::

    grad_cam(model, x, sex) -> (H, W) array in [0, 1]
    explain_image(predictor, image, sex) -> (Prediction, heat map, preprocessed image)
    overlay_heatmap(image, heatmap, path, *, title=None) -> Path
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from boneage.evaluation.plots import _new_figure, _save

__all__ = ["grad_cam", "explain_image", "overlay_heatmap"]

_MAX_ALPHA = 0.6  # opacity of the heat map where the influence is highest


def _sex_tensor(sex, n: int, device) -> torch.Tensor | None:
    """A (n,) float tensor of 1 (male) / 0 (female) from a tensor, bool, number or 'M'/'F'."""
    if sex is None:
        return None
    if isinstance(sex, torch.Tensor):
        t = sex.to(device=device, dtype=torch.float32).reshape(-1)
        return t.expand(n) if t.numel() == 1 else t
    if isinstance(sex, str):
        from boneage.sex import Sex

        sex = Sex.parse(sex).flag
    return torch.full((n,), float(sex), device=device)


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
    try:
        with torch.no_grad():
            fmap = model.forward_features(x)
        if fmap.ndim != 4:
            raise ValueError(f"Grad-CAM needs a 4-D feature map, forward_features gave shape {tuple(fmap.shape)}")
        # The gradient w.r.t. the feature map only involves pool + head, so a detached leaf
        # is enough; it also works for backbones without trainable parameters.
        fmap = fmap.detach().float().requires_grad_(True)
        with torch.enable_grad():
            out = model.head(model.pool(fmap), _sex_tensor(sex, x.shape[0], x.device))
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


def explain_image(predictor, image: np.ndarray, sex):
    """Predict one radiograph and compute its Grad-CAM heat map over the views it predicts from.

    Every view the Predictor uses (patches, rotated and mirrored test-time views) gets its
    map, which is put back where the view came from (mirrored back, rotated back, resized to
    its patch); overlapping maps are averaged. So the map explains the same views, with the
    same canonical preparation, as the prediction it is shown with.

    Args:
        predictor: a :class:`boneage.inference.Predictor`.
        image: the raw 2-D image in [0, 1].
        sex: 'M'/'F' (or anything :meth:`boneage.sex.Sex.parse` accepts).

    Returns:
        ``(prediction, heatmap, preprocessed)``: the :class:`~boneage.inference.Prediction`,
        a float32 heat map in [0, 1] and the preprocessed image it lies on, both at the
        preprocessed image's size.
    """
    from boneage.transforms import functional as TF_
    from boneage.transforms import view_layout

    prediction = predictor.predict(image, sex)  # also validates sex and image shape
    recipe = predictor.recipe
    pre = predictor.preprocess(image)
    views = predictor.views_of_preprocessed(pre)
    layout = view_layout(pre.shape, (recipe.patches.n, recipe.patches.size) if recipe.patches else None,
                         recipe.inference.flip_tta, recipe.inference.tta_angles)
    maps = []
    for i in range(0, len(views), predictor.batch_size):
        x = predictor.to_input(views[i:i + predictor.batch_size])
        maps.append(_raw_cams(predictor.model, x, prediction.sex.flag).cpu().numpy())
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
    heat = np.divide(heat_sum, weight, out=np.zeros_like(heat_sum), where=weight > 1e-6)
    return prediction, _normalise(heat), pre


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike, *,
                    title: str | None = None) -> Path:
    """Write the radiograph in gray with the heat map over it as a PNG (atomically).

    Args:
        image: 2-D grayscale image in [0, 1] (e.g. the preprocessed image).
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
    if heatmap.shape != image.shape:
        heatmap = cv2.resize(heatmap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    h, w = image.shape
    # Size the figure to the image's aspect ratio so the radiograph is not letterboxed into
    # a tiny area; the extra width leaves room for the colour bar.
    height = 6.0
    fig: Figure = _new_figure(width=min(14.0, max(4.0, height * w / h + 1.4)), height=height)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    cmap = colormaps["turbo"]
    heat = np.clip(heatmap, 0.0, 1.0)
    rgba = cmap(heat)
    # Opacity grows with the heat: a constant alpha would tint the whole radiograph with the
    # colour map's low end and hide exactly the anatomy the reader wants to compare against.
    rgba[..., 3] = _MAX_ALPHA * np.sqrt(heat)
    ax.imshow(rgba, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("relative influence")
    return _save(fig, path)
