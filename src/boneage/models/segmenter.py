"""Hand segmentation networks by name, their model files, and masks from their outputs.

``SEGMENTERS`` holds the networks a ``task: segmentation`` recipe names in ``model.name``
(FC-DenseNet, the U-Net). They are kept apart from the bone-age ``MODELS`` because they map an
image to a mask, not an image and a sex to months. A trained segmenter is an ordinary model
file (weights + recipe, :func:`boneage.inference.torch_model.save_model_file`) whose recipe says
``task: segmentation``; :func:`boneage.inference.torch_model.load_segmenter` rebuilds it. :func:`segment` is the one path
from an image to a hand mask: resize to the network's side, probability map, Otsu's threshold
(the paper's post-processing), back to the image's size, largest connected component.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import torch
from torch import nn

from boneage.models.fcdensenet import FCDenseNet
from boneage.models.unet import HandUNet
from boneage.registry import Registry
from boneage.transforms.functional import _check_image, resize
from boneage.transforms.hull import _foreground, crop_to_box, largest_component, mask_box

__all__ = ["SEGMENTERS", "create_segmenter", "otsu_mask", "probability_maps", "segment",
           "Segmenter", "bottleneck_features"]

SEGMENTERS: Registry = Registry("segmentation model")
SEGMENTERS.add("fc_densenet", FCDenseNet)
SEGMENTERS.add("unet", HandUNet)


def create_segmenter(name: str, **options) -> nn.Module:
    """Build a registered segmentation network; a typo lists the valid names."""
    return SEGMENTERS.create(name, where="model", **options)


def otsu_mask(prob: np.ndarray) -> np.ndarray:
    """Otsu's threshold on a 2-D probability map, as a uint8 0/1 mask.

    A map with one value everywhere has nothing to split and gives an empty mask. Otsu needs
    both classes present: a map that is confidently background everywhere except noise is
    split at the noise, which :func:`segment`'s largest-component step then mostly removes.
    """
    return _foreground(_check_image(np.asarray(prob, dtype=np.float32)), None).astype(np.uint8)


def _input_batch(net: nn.Module, images: list[np.ndarray], size: int) -> torch.Tensor:
    k = getattr(net, "size_multiple", 1)
    if size < k or size % k:
        raise ValueError(f"size must be a positive multiple of {k}, got {size}")
    return torch.from_numpy(np.stack([resize(_check_image(im), size) for im in images]))[:, None]


def probability_maps(net: nn.Module, images: list[np.ndarray], size: int | None = None,
                     batch_size: int = 32, features: bool = False):
    """Hand probability maps (N, size, size) of 2-D [0, 1] images squashed to the network's
    side (``size``, default its ``input_size``); with ``features``, also the flattened
    bottleneck vectors (N, D). Eval mode, no gradient; the network's mode is restored."""
    size = int(net.input_size if size is None else size)
    probs, feats = [], []
    was_training = net.training
    net.eval()
    first = next(net.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = _input_batch(net, images[i:i + batch_size], size).to(device)
                logits, f = net.forward_with_features(x)
                probs.append(torch.sigmoid(logits)[:, 0].float().cpu().numpy())
                feats.append(f.flatten(1).float().cpu().numpy())
    finally:
        net.train(was_training)
    p = np.concatenate(probs) if probs else np.zeros((0, size, size), np.float32)
    if not features:
        return p
    return p, (np.concatenate(feats) if feats else np.zeros((0, 0), np.float32))


def bottleneck_features(net: nn.Module, images: list[np.ndarray], size: int | None = None) -> np.ndarray:
    """The flattened bottleneck vectors (N, D) of images (what QBC compares)."""
    return probability_maps(net, images, size, features=True)[1]


def mask_from_probability(prob: np.ndarray, shape: tuple[int, int], keep_largest: bool = True) -> np.ndarray:
    """A probability map resized (linearly) to ``shape``, Otsu-thresholded, and reduced to its
    largest connected component: the mask of an image of that shape."""
    # Resizing probabilities rather than a thresholded mask keeps hand edges smooth on films
    # much larger than the network's side.
    prob = resize(np.asarray(prob, np.float32), shape)
    mask = otsu_mask(prob)
    return largest_component(mask) if keep_largest else mask


def segment(net: nn.Module, image: np.ndarray, size: int | None = None,
            keep_largest: bool = True) -> np.ndarray:
    """Hand mask (uint8 0/1, the image's own shape) of a 2-D [0, 1] image."""
    image = _check_image(image)
    return mask_from_probability(probability_maps(net, [image], size)[0], image.shape, keep_largest)


class Segmenter(nn.Module):
    """A named segmentation network as one module, so a model file can embed any registered
    segmenter (``boneage.inference.torch_model.SUBNETWORKS['segmenter']``) and rebuild it from
    ``options()``: ``{"model": name, "options": {...}}``."""

    def __init__(self, model: str, options: dict | None = None):
        super().__init__()
        self.model_name, self.model_options = str(model), dict(options or {})
        self.net = create_segmenter(self.model_name, **self.model_options)

    @classmethod
    def wrap(cls, name: str, net: nn.Module) -> "Segmenter":
        out = cls(name, net.options())
        out.net.load_state_dict(net.state_dict())
        return out.eval()

    def options(self) -> dict:
        return {"model": self.model_name, "options": json.loads(json.dumps(self.net.options()))}

    @property
    def input_size(self) -> int:
        return self.net.input_size

    @property
    def size_multiple(self) -> int:
        return self.net.size_multiple

    def forward_with_features(self, x):
        return self.net.forward_with_features(x)

    def forward(self, x):
        return self.net(x)


def mask_crop(net: nn.Module, image: np.ndarray, margin: float = 0.05, zero_background: bool = False,
              size: int | None = None) -> np.ndarray:
    """The image cropped to the bounding box of its segmented hand, grown by ``margin`` × the
    box's height and width per side; with ``zero_background`` every pixel outside the mask is
    set to 0 first, so markers, rulers and labels beside the hand cannot reach the bone-age
    network. An image where no hand is found passes whole (with a warning). float32 copy."""
    image = _check_image(image)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    mask = segment(net, image, size)
    box = mask_box(mask, margin)
    if box is None:
        warnings.warn("the segmenter found no hand; using the whole image", stacklevel=2)
        return image.copy()
    if zero_background:
        image = image * mask.astype(np.float32)
    return crop_to_box(image, box)
