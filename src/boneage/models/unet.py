"""A small U-Net hand segmenter and the crop built on it (the U+S+I ablation).

Training it on synthetic radiographs: :func:`boneage.segmentation.unet.train_hand_unet`.

This U-Net is a stand-in: a later segmentation issue replaces it with FC-DenseNet, the
segmenter used in the bone-age literature. It is kept deliberately small (about 120k weights at
the defaults) so it trains in seconds on CPU on the synthetic generator's
images and masks (:mod:`boneage.data.synthetic`), which is all the crop needs: the hand
outline, not fine anatomy.

Weights are saved as safetensors with the constructor options in the header metadata, so
:func:`load_hand_unet` rebuilds the network from the file alone.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as TF

from boneage.errors import InputError
from boneage.fileutils import atomic_path, read_safetensors_metadata
from boneage.transforms.functional import _check_image, resize
from boneage.transforms.hull import Box, crop_to_box, largest_component, mask_box

__all__ = ["HandUNet", "save_hand_unet", "load_hand_unet",
           "predict_hand_mask", "unet_crop_box", "unet_crop", "dice_score"]

FORMAT = "boneage-hand-unet/1"


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class HandUNet(nn.Module):
    """U-Net returning 1-channel hand-mask logits at the input resolution.

    Args:
        in_chans: input channels (1 for a radiograph).
        base: channels of the first level; each level down doubles them.
        depth: number of 2× poolings (3 or 4 suit 64-256 px inputs); input height and width
            must be divisible by ``2 ** depth``.
        input_size: the square side the network is trained at and that
            :func:`predict_hand_mask` resizes images to by default; must be divisible by
            ``2 ** depth``.
    """

    def __init__(self, in_chans: int = 1, base: int = 8, depth: int = 3, input_size: int = 64):
        super().__init__()
        for name, value in (("in_chans", in_chans), ("base", base), ("depth", depth),
                            ("input_size", input_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if input_size % (2 ** depth):
            raise ValueError(f"input_size must be divisible by 2**depth = {2 ** depth}, got {input_size}")
        self.in_chans, self.base, self.depth = int(in_chans), int(base), int(depth)
        self.input_size = int(input_size)
        widths = [self.base * 2 ** i for i in range(self.depth + 1)]
        self.down = nn.ModuleList([_double_conv(self.in_chans, widths[0])])
        self.down.extend(_double_conv(widths[i], widths[i + 1]) for i in range(self.depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(self.depth)))
        self.dec = nn.ModuleList(_double_conv(2 * widths[i], widths[i])
                                 for i in reversed(range(self.depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def options(self) -> dict[str, int]:
        """The constructor arguments that rebuild this network."""
        return {"in_chans": self.in_chans, "base": self.base, "depth": self.depth,
                "input_size": self.input_size}

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per level)."""
        return 2 ** self.depth

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, 1, H, W), deepest encoder maps)``; the latter are the image's feature
        vector when a committee of U-Nets scores disagreement."""
        k = 2 ** self.depth
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2] % k or x.shape[3] % k:
            raise ValueError(f"expected input (N, {self.in_chans}, H, W) with H and W divisible "
                             f"by {k}, got shape {tuple(x.shape)}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else TF.max_pool2d(x, 2))
            skips.append(x)
        x = bottleneck = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x), bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 1, H, W) logits; H and W divisible by ``2 ** depth``."""
        return self.forward_with_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened deepest encoder maps, (N, D)."""
        return self.forward_with_features(x)[1].flatten(1)


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0, np.asarray(target) > 0
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def save_hand_unet(model: HandUNet, path: str | Path) -> Path:
    """Write the weights and constructor options to a safetensors file; returns the path.

    Written to a temporary file and renamed, so an interrupted save leaves no truncated file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "options": json.dumps(model.options())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_hand_unet(path: str | Path) -> HandUNet:
    """Rebuild a :class:`HandUNet` saved by :func:`save_hand_unet`, in eval mode on CPU.

    Raises:
        InputError: the file is missing, not safetensors, or not a hand U-Net file.
    """
    from safetensors.torch import load_file

    meta = read_safetensors_metadata(path, "hand U-Net weights file")
    if meta.get("format") != FORMAT or "options" not in meta:
        raise InputError(f"not a hand U-Net file (expected metadata format {FORMAT!r})", path)
    model = HandUNet(**json.loads(meta["options"]))
    try:
        model.load_state_dict(load_file(str(path), device="cpu"))
    except RuntimeError as exc:
        raise InputError(f"weights do not match the stored U-Net options ({exc})", path) from None
    return model.eval()


def predict_hand_mask(model: HandUNet, image: np.ndarray, size: int | None = None) -> np.ndarray:
    """Hand mask of a 2-D float image, uint8 0/1 at the image's own resolution.

    The image is resized (squashed) to ``size`` × ``size`` (default: the network's
    ``input_size``), segmented, and the hand probability resized back and thresholded at 0.5;
    only the largest connected component is kept.
    """
    image = _check_image(image)
    size = model.input_size if size is None else int(size)
    k = 2 ** model.depth
    if size < k or size % k:
        raise ValueError(f"size must be a positive multiple of 2**depth = {k}, got {size}")
    x = torch.from_numpy(resize(image, size))[None, None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prob = torch.sigmoid(model(x))[0, 0].numpy()
    finally:
        model.train(was_training)
    # Resizing the probabilities (linearly) rather than a thresholded mask gives smooth hand
    # edges instead of size-to-image staircase blocks when a film is much larger than the net.
    prob = resize(prob, image.shape)
    return largest_component(prob > 0.5)


def unet_crop_box(model: HandUNet, image: np.ndarray, margin: float = 0.02,
                  size: int | None = None) -> Box | None:
    """Bounding box (top, bottom, left, right; bottom/right exclusive) of the convex hull of
    the predicted hand mask, grown by ``margin`` × its height/width and clipped to the image;
    None when the mask is empty."""
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return mask_box(predict_hand_mask(model, image, size=size), margin)


def unet_crop(model: HandUNet, image: np.ndarray, margin: float = 0.02,
              size: int | None = None) -> np.ndarray:
    """Crop ``image`` to :func:`unet_crop_box`; the whole image (with a warning) when the
    predicted mask is empty. Returns a float32 copy."""
    image = _check_image(image)
    box = unet_crop_box(model, image, margin=margin, size=size)
    if box is None:
        warnings.warn("the U-Net found no hand for the crop; using the whole image", stacklevel=2)
        return image.copy()
    return crop_to_box(image, box)
