"""FC-DenseNet (the "Tiramisu", Jégou et al. 2017) as the active-learning paper's figure 2.

A first 3×3 convolution, then a dense block and a transition down per level, a dense block as
the bottleneck, and per level a transition up (a strided 3×3 transposed convolution of the
*new* feature maps of the block below, so the up path does not grow quadratically), joined to
the skip connection of that level and followed by a dense block; a 1×1 convolution gives one
hand logit per pixel. The paper uses three transitions down and three up and a bottleneck of
192 feature maps, whose flattened values are the image's feature vector for query-by-committee
(:meth:`FCDenseNet.features`).

The defaults are small for CPU training on 64-px images (about 0.2 M weights); the paper's
sizes are ``first_channels=48, growth=16, down_layers=(4, 5, 7), bottleneck_layers=12``
(bottleneck 16 × 12 = 192 maps). The bottleneck has ``growth × bottleneck_layers`` maps; both
defaults give 192.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["FCDenseNet", "PAPER_OPTIONS"]

#: Constructor options of the paper-sized network (figure 2: 192 bottleneck maps).
PAPER_OPTIONS = {"first_channels": 48, "growth": 16, "down_layers": (4, 5, 7), "bottleneck_layers": 12}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _DenseLayer(nn.Sequential):
    """BN → ReLU → 3×3 conv to ``growth`` maps → dropout (the paper's layer)."""

    def __init__(self, cin: int, growth: int, dropout: float):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, growth, 3, padding=1, bias=False), nn.Dropout2d(dropout))


class _DenseBlock(nn.Module):
    """``n`` dense layers, each fed the concatenation of the block input and all earlier
    layers' outputs. Returns ``(input + new maps, new maps only)``."""

    def __init__(self, cin: int, growth: int, n: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(_DenseLayer(cin + i * growth, growth, dropout) for i in range(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new = []
        for layer in self.layers:
            out = layer(torch.cat([x, *new], dim=1))
            new.append(out)
        new_maps = torch.cat(new, dim=1)
        return torch.cat([x, new_maps], dim=1), new_maps


class _TransitionDown(nn.Sequential):
    """BN → ReLU → 1×1 conv (same width) → dropout → 2×2 max pool."""

    def __init__(self, c: int, dropout: float):
        super().__init__(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False),
                         nn.Dropout2d(dropout), nn.MaxPool2d(2))


class FCDenseNet(nn.Module):
    """Fully convolutional DenseNet returning 1-channel hand-mask logits at input resolution.

    Args:
        in_chans: input channels (1 for a radiograph).
        input_size: the square side it is trained at and that predictions resize images to;
            a multiple of ``2 ** len(down_layers)``.
        first_channels: maps of the first 3×3 convolution.
        growth: maps each dense layer adds (the growth rate).
        down_layers: dense layers per down level; one transition down (and one up) per entry.
            The paper has three levels.
        bottleneck_layers: dense layers of the bottleneck block; it has
            ``growth * bottleneck_layers`` maps (192 in the paper).
        dropout: dropout after every convolution of the dense layers and transitions.
    """

    def __init__(self, in_chans: int = 1, input_size: int = 64, first_channels: int = 16,
                 growth: int = 8, down_layers: Sequence[int] = (2, 3, 4), bottleneck_layers: int = 24,
                 dropout: float = 0.2):
        super().__init__()
        self.in_chans = _positive_int("in_chans", in_chans)
        self.input_size = _positive_int("input_size", input_size)
        self.first_channels = _positive_int("first_channels", first_channels)
        self.growth = _positive_int("growth", growth)
        self.bottleneck_layers = _positive_int("bottleneck_layers", bottleneck_layers)
        if isinstance(down_layers, (str, bytes)) or not isinstance(down_layers, Sequence) or not down_layers:
            raise ValueError(f"down_layers must be a non-empty list of layer counts, got {down_layers!r}")
        self.down_layers = tuple(_positive_int("down_layers entry", n) for n in down_layers)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if self.input_size % self.size_multiple:
            raise ValueError(f"input_size must be divisible by 2**len(down_layers) = {self.size_multiple}, "
                             f"got {self.input_size}")

        g, p = self.growth, self.dropout
        self.first = nn.Conv2d(self.in_chans, self.first_channels, 3, padding=1, bias=False)
        c = self.first_channels
        self.down_blocks, self.transitions_down, skip_channels = nn.ModuleList(), nn.ModuleList(), []
        for n in self.down_layers:
            self.down_blocks.append(_DenseBlock(c, g, n, p))
            c += n * g
            skip_channels.append(c)
            self.transitions_down.append(_TransitionDown(c, p))
        self.bottleneck = _DenseBlock(c, g, self.bottleneck_layers, p)
        up_in = self.bottleneck_layers * g  # only the bottleneck's new maps go up
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(reversed(self.down_layers), reversed(skip_channels)):
            self.transitions_up.append(nn.ConvTranspose2d(up_in, up_in, 3, stride=2, padding=1,
                                                          output_padding=1, bias=False))
            self.up_blocks.append(_DenseBlock(up_in + skip, g, n, p))
            last_channels = up_in + skip + n * g
            up_in = n * g
        self.head = nn.Conv2d(last_channels, 1, 1)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per transition down)."""
        return 2 ** len(self.down_layers)

    @property
    def bottleneck_channels(self) -> int:
        """Feature maps of the bottleneck (the paper's 192)."""
        return self.growth * self.bottleneck_layers

    def options(self) -> dict:
        """The constructor arguments that rebuild this network (JSON-serialisable)."""
        return {"in_chans": self.in_chans, "input_size": self.input_size,
                "first_channels": self.first_channels, "growth": self.growth,
                "down_layers": list(self.down_layers), "bottleneck_layers": self.bottleneck_layers,
                "dropout": self.dropout}

    def _check(self, x: torch.Tensor) -> None:
        k = self.size_multiple
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2] % k or x.shape[3] % k:
            raise ValueError(f"expected input (N, {self.in_chans}, H, W) with H and W divisible "
                             f"by {k}, got shape {tuple(x.shape)}")

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, 1, H, W), bottleneck maps (N, growth * bottleneck_layers, H/k, W/k))``."""
        self._check(x)
        x = self.first(x)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions_down):
            x, _ = block(x)
            skips.append(x)
            x = down(x)
        _, bottleneck = self.bottleneck(x)
        x = bottleneck
        for up, block in zip(self.transitions_up, self.up_blocks):
            full, x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(full), bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) → (N, 1, H, W) hand logits."""
        return self.forward_with_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened bottleneck maps, (N, D): the image's feature vector for QBC."""
        return self.forward_with_features(x)[1].flatten(1)
