"""BoneAgeNet (Ma, 2021): Inception-v3 with a width factor and repeat counts, and its head.

The paper scales Keras's Inception-v3 ("BoneAgeInception") along two axes:

* **width** ``β``: every convolution's filter count is multiplied by β, rounded half up, and
  kept at least 1 (:func:`scaled_filters`);
* **depth**: the repeat counts of three groups of blocks, named after the first block of each
  group in Keras's code (the paper's table 1: "n.Mixed5 = 2, n.Mixed7 = 1, n.Mixed9 = 2" is
  the standard network):

  ======== ========================================================== ======== ========
  group    Keras blocks (standard network)                            baseline final
  ======== ========================================================== ======== ========
  Mixed5   ``mixed5``-``mixed6``: 17×17 blocks, 160-channel 7×7 branches  2        4
  Mixed7   ``mixed7``: 17×17 block, 192-channel 7×7 branches              1        3
  Mixed9   ``mixed9``-``mixed10``: 8×8 blocks (expanded filter banks)     2        3
  ======== ========================================================== ======== ========

  The other blocks can be removed too, for the paper's first step (ablating blocks one at a
  time): ``early_repeats`` = (35×35 blocks ``mixed0``-``mixed2``, 17×17 block with
  128-channel branches ``mixed4``), standard (3, 1). The two grid reductions (``mixed3``,
  ``mixed8``) always stay: they set the 35 → 17 → 8 resolutions.

Each convolution is Keras's ``conv2d_bn``: convolution without bias, batch norm (eps 1e-3),
ReLU. Average-pool branches use 3×3 'same' pooling that, as in Keras, averages only the
pixels inside the image. The input is one channel (a grayscale radiograph scaled to [0, 1]);
the network needs at least :data:`MIN_INPUT_SIDE` pixels per side (its stride-2 stem, two
pools and two reductions), and gives an 8×8 map at 300 px.

:func:`inception_v3_scaled` (registered as a model) puts the paper's figure-1 head on it:
global average pooling → dropout → concatenation with a dense layer on sex → an optional
extra fully connected layer → one output, with an optional L2 penalty on the output layer's
weights that the regression task adds to the training loss (:meth:`SexFusionHead.penalty`).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from boneage.models.head import BoneAgeModel, SexFusionHead
from boneage.models.registry import register_model

__all__ = ["ScaledInceptionV3", "inception_v3_scaled", "scaled_filters", "MIN_INPUT_SIDE",
           "BASELINE_REPEATS", "BASELINE_EARLY_REPEATS", "PAPER_VARIANTS"]

#: Repeat counts of the Mixed5 / Mixed7 / Mixed9 groups in the standard Inception-v3.
BASELINE_REPEATS = (2, 1, 2)
#: Repeat counts of the 35×35 group (mixed0-2) and of the 128-channel 17×17 block (mixed4).
BASELINE_EARLY_REPEATS = (3, 1)
#: Smallest input side the stem and the two reductions leave at least one pixel of.
MIN_INPUT_SIDE = 75

#: The rows of the paper's table 1: model options and the parameter count the paper gives.
#: ``extra_fc=True`` is the paper's final extra fully connected layer (see ``inception_v3_scaled``).
PAPER_VARIANTS: dict[str, dict] = {
    "baseline": {"options": {"width": 1.0, "repeats": [2, 1, 2]}, "paper_parameters": 28e6},
    "modified-1": {"options": {"width": 1.2, "repeats": [4, 1, 2]}, "paper_parameters": 36e6},
    "modified-2": {"options": {"width": 1.3, "repeats": [5, 1, 3]}, "paper_parameters": 55e6},
    "modified-3": {"options": {"width": 1.2, "repeats": [4, 3, 3]}, "paper_parameters": 51e6},
    "modified-4": {"options": {"width": 1.0, "repeats": [6, 4, 4]}, "paper_parameters": 47e6},
    "modified-5": {"options": {"width": 1.2, "repeats": [5, 4, 4]}, "paper_parameters": 65e6},
    "modified-6": {"options": {"width": 1.1, "repeats": [6, 5, 5]}, "paper_parameters": 66e6},
    "final-nofc": {"options": {"width": 1.4, "repeats": [4, 3, 3]}, "paper_parameters": 69e6},
    "final-nofc-nosex": {"options": {"width": 1.4, "repeats": [4, 3, 3], "sex_units": 0},
                         "paper_parameters": 69e6},
    "final": {"options": {"width": 1.4, "repeats": [4, 3, 3], "extra_fc": True, "dropout": 0.5},
              "paper_parameters": 78e6},
}


def scaled_filters(filters: int, width: float) -> int:
    """``filters × width`` rounded half up, at least 1 (the paper's "multiply the number of
    filters of each convolutional layer by β")."""
    return max(1, int(math.floor(filters * width + 0.5)))


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a number > 0 (β, the factor on every convolution's filter "
                         f"count, e.g. 0.7, 1.0 or 1.4), got {width!r}")
    return float(width)


def _check_counts(name: str, counts, n: int, groups: str) -> tuple[int, ...]:
    if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence) or len(counts) != n:
        raise ValueError(f"{name} must be a list of {n} whole numbers >= 0 ({groups}), got {counts!r}")
    for i, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
            raise ValueError(f"{name}[{i}] must be a whole number >= 0 (repeats of {groups.split(', ')[i]}), "
                             f"got {c!r}")
    return tuple(int(c) for c in counts)


class ConvBN(nn.Sequential):
    """Keras's ``conv2d_bn``: convolution (no bias) → batch norm → ReLU, 'same' padding unless
    ``padding=0`` ('valid')."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=None):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if padding is None:
            padding = (kh // 2, kw // 2)
        super().__init__(nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3), nn.ReLU(inplace=True))
        self.out_channels = c_out


def _avg_pool_same() -> nn.Module:
    # Keras's 'same' average pooling divides by the pixels inside the image only.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class _Branches(nn.Module):
    """Parallel branches whose outputs are concatenated along the channels."""

    def __init__(self, **branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleDict(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches.values()], dim=1)


class _Split(nn.Module):
    """A 1×3 and a 3×1 convolution of the same input, concatenated (the 8×8 blocks)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.a = ConvBN(c_in, c_out, (1, 3))
        self.b = ConvBN(c_in, c_out, (3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


def block_35(c_in: int, pool_filters: int, w: float) -> tuple[nn.Module, int]:
    """A 35×35 block (Keras ``mixed0``-``mixed2``): 1×1, 5×5, double 3×3 and pool branches."""
    s = lambda f: scaled_filters(f, w)  # noqa: E731
    block = _Branches(
        b1x1=ConvBN(c_in, s(64), 1),
        b5x5=nn.Sequential(ConvBN(c_in, s(48), 1), ConvBN(s(48), s(64), 5)),
        b3x3dbl=nn.Sequential(ConvBN(c_in, s(64), 1), ConvBN(s(64), s(96), 3), ConvBN(s(96), s(96), 3)),
        pool=nn.Sequential(_avg_pool_same(), ConvBN(c_in, s(pool_filters), 1)))
    return block, s(64) + s(64) + s(96) + s(pool_filters)


def reduction_35_to_17(c_in: int, w: float) -> tuple[nn.Module, int]:
    """Keras ``mixed3``: the 35×35 → 17×17 grid reduction."""
    s = lambda f: scaled_filters(f, w)  # noqa: E731
    block = _Branches(
        b3x3=ConvBN(c_in, s(384), 3, stride=2, padding=0),
        b3x3dbl=nn.Sequential(ConvBN(c_in, s(64), 1), ConvBN(s(64), s(96), 3),
                              ConvBN(s(96), s(96), 3, stride=2, padding=0)),
        pool=nn.MaxPool2d(3, stride=2))
    return block, s(384) + s(96) + c_in


def block_17(c_in: int, c7: int, w: float) -> tuple[nn.Module, int]:
    """A 17×17 block with factorised 7×7 branches of ``c7`` channels (Keras ``mixed4``: 128,
    ``mixed5``-``mixed6``: 160, ``mixed7``: 192)."""
    s = lambda f: scaled_filters(f, w)  # noqa: E731
    c, out = s(c7), s(192)
    block = _Branches(
        b1x1=ConvBN(c_in, out, 1),
        b7x7=nn.Sequential(ConvBN(c_in, c, 1), ConvBN(c, c, (1, 7)), ConvBN(c, out, (7, 1))),
        b7x7dbl=nn.Sequential(ConvBN(c_in, c, 1), ConvBN(c, c, (7, 1)), ConvBN(c, c, (1, 7)),
                              ConvBN(c, c, (7, 1)), ConvBN(c, out, (1, 7))),
        pool=nn.Sequential(_avg_pool_same(), ConvBN(c_in, out, 1)))
    return block, 4 * out


def reduction_17_to_8(c_in: int, w: float) -> tuple[nn.Module, int]:
    """Keras ``mixed8``: the 17×17 → 8×8 grid reduction."""
    s = lambda f: scaled_filters(f, w)  # noqa: E731
    block = _Branches(
        b3x3=nn.Sequential(ConvBN(c_in, s(192), 1), ConvBN(s(192), s(320), 3, stride=2, padding=0)),
        b7x7x3=nn.Sequential(ConvBN(c_in, s(192), 1), ConvBN(s(192), s(192), (1, 7)),
                             ConvBN(s(192), s(192), (7, 1)), ConvBN(s(192), s(192), 3, stride=2, padding=0)),
        pool=nn.MaxPool2d(3, stride=2))
    return block, s(320) + s(192) + c_in


def block_8(c_in: int, w: float) -> tuple[nn.Module, int]:
    """An 8×8 block with expanded filter banks (Keras ``mixed9``-``mixed10``)."""
    s = lambda f: scaled_filters(f, w)  # noqa: E731
    block = _Branches(
        b1x1=ConvBN(c_in, s(320), 1),
        b3x3=nn.Sequential(ConvBN(c_in, s(384), 1), _Split(s(384), s(384))),
        b3x3dbl=nn.Sequential(ConvBN(c_in, s(448), 1), ConvBN(s(448), s(384), 3), _Split(s(384), s(384))),
        pool=nn.Sequential(_avg_pool_same(), ConvBN(c_in, s(192), 1)))
    return block, s(320) + 4 * s(384) + s(192)


class ScaledInceptionV3(nn.Module):
    """Inception-v3 feature extractor with width factor ``width`` (β) and repeat counts.

    Args:
        in_chans: input channels (1: a grayscale radiograph).
        width: β, multiplying every convolution's filter count (> 0).
        repeats: blocks in the Mixed5, Mixed7 and Mixed9 groups (standard: 2, 1, 2).
        early_repeats: blocks in the 35×35 group and the 128-channel 17×17 group (standard: 3, 1).

    ``forward_features`` returns the last feature map, ``(B, num_features, h, w)``;
    :meth:`gradcam_split` cuts it before the last grid reduction, for Grad-CAM.
    """

    def __init__(self, in_chans: int = 1, width: float = 1.0, repeats: Sequence[int] = BASELINE_REPEATS,
                 early_repeats: Sequence[int] = BASELINE_EARLY_REPEATS):
        super().__init__()
        if isinstance(in_chans, bool) or not isinstance(in_chans, numbers.Integral) or in_chans < 1:
            raise ValueError(f"in_chans must be a whole number >= 1, got {in_chans!r}")
        w = _check_width(width)
        self.width = w
        self.repeats = _check_counts("repeats", repeats, 3, "Mixed5, Mixed7, Mixed9")
        self.early_repeats = _check_counts("early_repeats", early_repeats, 2,
                                           "the 35x35 blocks mixed0-2, the 128-channel block mixed4")
        s = lambda f: scaled_filters(f, w)  # noqa: E731
        stem = nn.Sequential(
            ConvBN(in_chans, s(32), 3, stride=2, padding=0), ConvBN(s(32), s(32), 3, padding=0),
            ConvBN(s(32), s(64), 3), nn.MaxPool2d(3, stride=2),
            ConvBN(s(64), s(80), 1), ConvBN(s(80), s(192), 3, padding=0), nn.MaxPool2d(3, stride=2))
        layers: list[tuple[str, nn.Module]] = [("stem", stem)]
        c = s(192)

        def add(name: str, built: tuple[nn.Module, int]) -> None:
            nonlocal c
            layers.append((name, built[0]))
            c = built[1]

        n35, n128 = self.early_repeats
        for i in range(n35):
            add(f"mixed35_{i + 1}", block_35(c, 32 if i == 0 else 64, w))
        add("reduction35", reduction_35_to_17(c, w))
        for i in range(n128):
            add(f"mixed17c128_{i + 1}", block_17(c, 128, w))
        n5, n7, n9 = self.repeats
        for i in range(n5):
            add(f"mixed5_{i + 1}", block_17(c, 160, w))
        for i in range(n7):
            add(f"mixed7_{i + 1}", block_17(c, 192, w))
        self._reduction17_index = len(layers)
        add("reduction17", reduction_17_to_8(c, w))
        for i in range(n9):
            add(f"mixed9_{i + 1}", block_8(c, w))
        self.blocks = nn.Sequential(OrderedDict(layers))
        self.num_features = c

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        """ValueError naming the size when an input is too small for the reductions."""
        h, w = x.shape[-2:]
        if min(h, w) < MIN_INPUT_SIDE:
            raise ValueError(f"input {h}x{w} is too small for inception_v3_scaled: each side must be "
                             f"at least {MIN_INPUT_SIDE} px (its stride-2 stem, two pools and two grid "
                             f"reductions); resize to e.g. 112 or 300")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map: ``(B, num_features, h, w)`` (8×8 at 300 px, 2×2 at 112 px)."""
        self.check_input(x)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def gradcam_split(self):
        """``(pre, post)`` with ``post(pre(x)) == forward_features(x)``, cut before the last
        grid reduction: Grad-CAM at the 17×17-stage map, twice the last map's resolution
        (5×5 instead of 2×2 at 112 px)."""
        cut = self._reduction17_index
        head, tail = self.blocks[:cut], self.blocks[cut:]

        def pre(x: torch.Tensor) -> torch.Tensor:
            self.check_input(x)
            return head(x)

        return pre, tail


@register_model
def inception_v3_scaled(in_chans: int = 1, width: float = 1.0, repeats: Sequence[int] = BASELINE_REPEATS,
                        early_repeats: Sequence[int] = BASELINE_EARLY_REPEATS, sex_units: int = 32,
                        extra_fc: bool | int = False, dropout: float = 0.0,
                        output_l2: float = 0.0) -> BoneAgeModel:
    """BoneAgeNet: :class:`ScaledInceptionV3` from scratch with the paper's figure-1 head.

    Head: global average pooling → ``dropout`` → concatenation with ``Linear(1, sex_units) +
    ReLU`` on sex (``sex_units=0``: no sex input, the table's "no gender info" row) →
    ``extra_fc`` → ``Linear(·, 1)``. ``extra_fc``: False for none (the table's "no FC layer"
    rows), True for one ReLU layer as wide as the pooled features (``round(2048 β)``: 2867 at
    β = 1.4, which gives the paper's ~9M parameters for it), or a number of units.
    ``output_l2``: α of the penalty ``α Σ w²`` on the output layer's weights (not its bias,
    as Keras's ``kernel_regularizer``), added to the training loss.
    """
    backbone = ScaledInceptionV3(in_chans, width, repeats, early_repeats)
    if isinstance(extra_fc, bool):
        hidden = (backbone.num_features,) if extra_fc else ()
    elif isinstance(extra_fc, numbers.Integral) and extra_fc >= 0:
        hidden = (int(extra_fc),) if extra_fc else ()
    else:
        raise ValueError(f"extra_fc must be true, false or a number of units >= 0, got {extra_fc!r}")
    head = SexFusionHead(backbone.num_features, sex_units=sex_units, hidden=hidden, dropout=dropout,
                         output_l2=output_l2)
    return BoneAgeModel(backbone, backbone.num_features, head)
