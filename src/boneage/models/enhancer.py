"""pix2pix networks for radiograph enhancement: a U-Net generator and a pair discriminator.

The generator maps a (segmented) hand radiograph x in [0, 1] to an enhanced one G(x); the
discriminator D(x, y) tells a target pair from a generated one (paper section 2.3: a U-Net
generator; three convolutions and one fully connected layer for D).

The generator is the project's U-Net (:class:`boneage.models.unet.HandUNet`) used as a
correction in logit space, G(x) = sigmoid(logit(x) + U(x)), with the U-Net's last layer
starting at zero: an untrained generator is the identity, so a short training run can only
move it away from "leave the image alone" as far as the loss rewards, and its output stays
in (0, 1) without clipping. It is fully convolutional; images of any size are padded
(edge pixels repeated) to a multiple of the U-Net's stride and cropped back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as TF

from boneage.errors import InputError
from boneage.fileutils import atomic_path, read_safetensors_metadata
from boneage.models.unet import HandUNet
from boneage.registry import Registry
from boneage.transforms.functional import _check_image

__all__ = ["EnhancementGenerator", "PairDiscriminator", "enhance", "save_enhancer", "load_enhancer"]

#: Metadata format of a generator file written by :func:`save_enhancer`.
FORMAT = "boneage-enhancer/1"
#: Inputs are clamped this far inside (0, 1) before the logit, so black and white stay finite.
_EPS = 1e-3


class EnhancementGenerator(nn.Module):
    """U-Net generator G: (N, 1, H, W) images in [0, 1] -> enhanced images in (0, 1).

    Args:
        base: channels of the U-Net's first level (doubling at each level down).
        depth: number of 2x poolings; any H, W work (padded to a multiple of ``2 ** depth``).
    """

    def __init__(self, base: int = 16, depth: int = 3):
        super().__init__()
        # HandUNet checks base and depth; its input_size only matters for hand masks.
        self.unet = HandUNet(1, base=base, depth=depth, input_size=2 ** int(depth))
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)

    def options(self) -> dict[str, int]:
        """The constructor arguments that rebuild this network."""
        return {"base": self.unet.base, "depth": self.unet.depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"the generator takes (N, 1, H, W) images, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        k = 2 ** self.unet.depth
        padded = TF.pad(x, (0, -w % k, 0, -h % k), mode="replicate")
        correction = self.unet(padded)[..., :h, :w]
        return torch.sigmoid(torch.logit(x.clamp(_EPS, 1 - _EPS)) + correction)


class PairDiscriminator(nn.Module):
    """Discriminator D(x, y): one logit per (input, output) pair, positive for "a target".

    Three strided 4x4 convolutions (2 -> base -> 2 base -> 4 base channels, LeakyReLU, batch
    norm after the second and third, as in pix2pix) and one fully connected layer. The
    feature map is averaged to ``pooled`` x ``pooled`` before the fully connected layer, so
    one discriminator takes any image size from 8 px up.
    """

    def __init__(self, base: int = 16, pooled: int = 4):
        super().__init__()
        for name, value in (("base", base), ("pooled", pooled)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.base, self.pooled = int(base), int(pooled)
        b = self.base
        self.convs = nn.Sequential(
            nn.Conv2d(2, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(b, 2 * b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * b),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * b, 4 * b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * b),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(self.pooled)
        self.fc = nn.Linear(4 * b * self.pooled ** 2, 1)

    def options(self) -> dict[str, int]:
        return {"base": self.base, "pooled": self.pooled}

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The last convolution's map, (N, 4 base, H/8, W/8)."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape != y.shape:
            raise ValueError(f"the discriminator takes two (N, 1, H, W) images of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"the discriminator needs images of at least 8x8, got {tuple(x.shape[-2:])}")
        return self.convs(torch.cat([x, y], dim=1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) logits: D's belief that y is x's target rather than G(x)."""
        return self.fc(self.pool(self.features(x, y)).flatten(1)).squeeze(1)


def enhance(generator: EnhancementGenerator, image: np.ndarray) -> np.ndarray:
    """A 2-D [0, 1] image through the generator (eval mode, no gradients), float32, same shape."""
    image = _check_image(image)
    param = next(generator.parameters())
    x = torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32))[None, None].to(param.device)
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            out = generator(x)[0, 0].cpu().numpy()
    finally:
        generator.train(was_training)
    return out.astype(np.float32)


def save_enhancer(generator: EnhancementGenerator, path: str | Path, info: dict | None = None) -> Path:
    """Write the generator's weights, constructor options and ``info`` (how it was trained)
    to a safetensors file, atomically; :func:`load_enhancer` rebuilds it from the file alone."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    meta = {"format": FORMAT, "options": json.dumps(generator.options()), "info": json.dumps(info or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_weights_strictly(network: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """Load ``state`` into ``network``, or raise :class:`InputError` naming the first tensor
    that is missing, unexpected or of another shape."""
    own = network.state_dict()
    for name in own:
        if name not in state:
            raise InputError(f"the weights do not match the architecture: tensor {name!r} is missing", path)
        if tuple(state[name].shape) != tuple(own[name].shape):
            raise InputError(f"the weights do not match the architecture: tensor {name!r} has shape "
                             f"{tuple(state[name].shape)}, the network's is {tuple(own[name].shape)}", path)
    extra = [name for name in state if name not in own]
    if extra:
        raise InputError(f"the weights do not match the architecture: unexpected tensor {extra[0]!r}", path)
    network.load_state_dict(state)


def load_enhancer(path: str | Path) -> EnhancementGenerator:
    """Rebuild a generator written by :func:`save_enhancer`, in eval mode on CPU.

    Raises:
        InputError: the file is missing, not safetensors, not a generator file, or its
            tensors do not fit its options (naming the first tensor that does not).
    """
    from safetensors.torch import load_file

    meta = read_safetensors_metadata(path, "enhancement generator file")
    if meta.get("format") != FORMAT or "options" not in meta:
        raise InputError(f"not an enhancement generator file (expected metadata format {FORMAT!r}; "
                         "train one with a task: gan recipe)", path)
    try:
        generator = EnhancementGenerator(**json.loads(meta["options"]))
    except (TypeError, ValueError) as exc:
        raise InputError(f"broken generator options ({exc})", path) from None
    load_weights_strictly(generator, load_file(str(path), device="cpu"), path)
    return generator.eval()


def enhancer_info(path: str | Path) -> dict:
    """The ``info`` stored with a generator file (its training recipe and validation L1)."""
    meta = read_safetensors_metadata(path, "enhancement generator file")
    return json.loads(meta.get("info", "{}"))


#: The enhancement task's networks (``task: gan``; options under ``gan.generator`` and
#: ``gan.discriminator``), listed beside the bone-age and segmentation networks.
ENHANCERS: Registry = Registry("enhancement network")
ENHANCERS.add("pix2pix_generator", EnhancementGenerator)
ENHANCERS.add("pair_discriminator", PairDiscriminator)
