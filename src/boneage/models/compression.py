"""He & Jiang (IEEE Access 2021): a learned compression module in front of an SE-ResNet.

The paper's model (its "C + S + I") is ``CompressionModule`` (1024x1024 -> 256x256) followed
by an SE-ResNet and a regression head of several fully connected layers with dropout 0.5
before the output layer. Registered here, besides it, are its ablations and baselines:
``seresnet18/34/50`` on the resized image (S + I), ``compressed_resnet18`` (C + I, no SE) and
``vgg16`` (the input-size study of its table 1).

The "I" (Gaussian-weighted MSE) is a loss, not part of the model: see :mod:`boneage.losses`.
"""

from __future__ import annotations

from typing import Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from boneage.models.backbones import _assemble
from boneage.models.head import BoneAgeModel
from boneage.models.registry import register_model

__all__ = ["CompressionModule", "CompressedBackbone", "se_resnet"]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CompressionModule(nn.Module):
    """The learned front end of the paper's figure 3: ``in_size`` -> ``in_size / ratio``.

    What the paper states: two 3x3 convolutions take ``H x W x C_in`` to ``H x W x C1``;
    max-pooling halves the side; once the target size is reached, "upsampling and shallow
    feature fusion" perform a "preliminary feature screening"; the result is
    ``H/4 x W/4 x C``. The figure itself is not in the text, so the rest is our reading:

    * ``stem``: the two 3x3 conv-BN-ReLU at full resolution, ``in_chans -> width`` (C1).
    * ``down``: ``log2(ratio)`` steps of 2x2 max-pool + 3x3 conv-BN-ReLU, doubling the
      channels each time, down to the target side ``in_size / ratio``.
    * ``deep``: one more max-pool + 3x3 conv at half the target side, upsampled back to it
      (nearest neighbour: its backward is deterministic on CUDA, unlike bilinear) - the
      "upsampling" of the figure, giving the fusion a wider receptive field.
    * ``fuse``: the concatenation of the target-size features, the upsampled deep features
      and the shallow (stem) features max-pooled by ``ratio`` - the "shallow feature fusion"
      - mixed by a 1x1 conv-BN-ReLU and projected by a 3x3 conv to ``out_chans``.

    The output has no activation or normalisation: it is an image-like input for the next
    network, whose stem normalises it. ``out_chans=3`` lets it feed a standard backbone stem.
    A 1x1 fusion (rather than 3x3) keeps the cost at 1024 px dominated by the unavoidable
    full-resolution stem. Channel widths (the paper's C1, C2, C) are not given in the paper;
    ``width=16`` is our choice.

    Args:
        in_size: side of the square input the module accepts (the paper: 1024).
        ratio: side reduction, a power of two >= 2 dividing ``in_size`` (the paper: 4).
        in_chans: input channels (1 for a grayscale radiograph).
        out_chans: output channels.
        width: channels of the full-resolution stem (C1); each pooling step doubles them.
    """

    def __init__(self, in_size: int = 1024, ratio: int = 4, in_chans: int = 1, out_chans: int = 3,
                 width: int = 16):
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2 or ratio & (ratio - 1):
            raise ValueError(f"compression ratio must be a power of two >= 2, got {ratio!r}")
        if isinstance(in_size, bool) or not isinstance(in_size, int) or in_size < 1:
            raise ValueError(f"in_size must be a positive integer, got {in_size!r}")
        if in_size % ratio:
            raise ValueError(f"compression ratio {ratio} does not divide input size {in_size}")
        for name, value in (("in_chans", in_chans), ("out_chans", out_chans), ("width", width)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_size = in_size
        self.ratio = ratio
        self.out_size = in_size // ratio
        self.in_chans = in_chans
        self.out_chans = out_chans

        self.stem = nn.Sequential(_conv_bn_relu(in_chans, width), _conv_bn_relu(width, width))
        steps = ratio.bit_length() - 1
        chans = [width * 2 ** i for i in range(steps + 1)]
        self.down = nn.Sequential(*[nn.Sequential(nn.MaxPool2d(2), _conv_bn_relu(chans[i], chans[i + 1]))
                                    for i in range(steps)])
        # ceil_mode so that an odd (or 1-pixel) target side still leaves a deep map to upsample.
        self.deep = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _conv_bn_relu(chans[-1], chans[-1]))
        self.shallow_pool = nn.MaxPool2d(ratio)
        self.fuse = _conv_bn_relu(2 * chans[-1] + width, chans[-1], kernel=1)
        self.proj = nn.Conv2d(chans[-1], out_chans, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, in_size, in_size)`` -> ``(B, out_chans, in_size/ratio, in_size/ratio)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"CompressionModule expects (B, {self.in_chans}, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if (h, w) != (self.in_size, self.in_size):
            why = "" if h % self.ratio == 0 and w % self.ratio == 0 else \
                f", and compression ratio {self.ratio} does not divide it"
            raise ValueError(f"CompressionModule was built for {self.in_size}x{self.in_size} input "
                             f"but got {h}x{w}{why}; resize the images or set in_size={h}")
        shallow = self.stem(x)
        mid = self.down(shallow)
        deep = F.interpolate(self.deep(mid), size=mid.shape[-2:], mode="nearest")
        fused = self.fuse(torch.cat([mid, deep, self.shallow_pool(shallow)], dim=1))
        return self.proj(fused)


class CompressedBackbone(nn.Module):
    """``CompressionModule`` followed by a backbone; exposes the backbone's feature map.

    ``forward_features`` returns the backbone's last feature map (what Grad-CAM needs), so the
    pair plugs into :class:`~boneage.models.head.BoneAgeModel` like any single backbone.
    """

    def __init__(self, compression: CompressionModule, body: nn.Module):
        super().__init__()
        self.compression = compression
        self.body = body
        self.num_features = body.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's 4-D feature map of the compressed image."""
        return self.body.forward_features(self.compression(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def se_resnet(depth: int, in_chans: int = 1) -> nn.Module:
    """SE-ResNet-``depth`` (18, 34 or 50) from scratch, returning the 4-D feature map.

    timm's ``seresnet*`` use the ResNet ``BasicBlock`` / ``Bottleneck`` with
    ``attn_layer='se'``: the ``SEModule`` (global average pool -> 1x1 conv -> ReLU -> 1x1 conv
    -> sigmoid, multiplied onto its input) is applied to the residual branch after its last
    conv + BN and *before* the residual sum, ``y = relu(se(F(x)) + x)``, which is the
    standard SE-ResNet and what the paper's figure 5 shows ("squeeze and excitation work
    before the summation"); its equation (1) is loosely written as ``F(f_se(x)) + x`` but
    describes the same block. The squeeze width is ``channels / 16`` rounded to a multiple of
    8, so it scales with each stage's channels (the paper's "adjustable scale according to
    the size of the feature channel"). Checked against timm 1.0 ``models/resnet.py``.
    """
    if depth not in (18, 34, 50):
        raise ValueError(f"SE-ResNet depth must be 18, 34 or 50, got {depth}")
    return timm.create_model(f"seresnet{depth}", pretrained=False, num_classes=0, global_pool="",
                             in_chans=in_chans)


def _compressed(body_name: str, in_chans: int, in_size: int, ratio: int, compress_width: int,
                compress_chans: int) -> CompressedBackbone:
    compression = CompressionModule(in_size=in_size, ratio=ratio, in_chans=in_chans,
                                    out_chans=compress_chans, width=compress_width)
    body = timm.create_model(body_name, pretrained=False, num_classes=0, global_pool="",
                             in_chans=compress_chans)
    return CompressedBackbone(compression, body)


_HIDDEN = (512, 256)


@register_model
def seresnet18(in_chans: int = 1, sex_units: int = 32, hidden: Sequence[int] = _HIDDEN,
               dropout: float = 0.5) -> BoneAgeModel:
    """SE-ResNet18 on the resized image (the paper's S + I ablation: 256x256 input)."""
    return _assemble(se_resnet(18, in_chans), sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def seresnet34(in_chans: int = 1, sex_units: int = 32, hidden: Sequence[int] = _HIDDEN,
               dropout: float = 0.5) -> BoneAgeModel:
    """SE-ResNet34 on the resized image (S + I), FC head with dropout 0.5 before the output."""
    return _assemble(se_resnet(34, in_chans), sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def seresnet50(in_chans: int = 1, sex_units: int = 32, hidden: Sequence[int] = _HIDDEN,
               dropout: float = 0.5) -> BoneAgeModel:
    """SE-ResNet50 on the resized image (S + I), FC head with dropout 0.5 before the output."""
    return _assemble(se_resnet(50, in_chans), sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def compressed_seresnet18(in_chans: int = 1, in_size: int = 1024, ratio: int = 4,
                          compress_width: int = 16, compress_chans: int = 3, sex_units: int = 32,
                          hidden: Sequence[int] = _HIDDEN, dropout: float = 0.5) -> BoneAgeModel:
    """The paper's model (C + S + I): CompressionModule (1024 -> 256) -> SE-ResNet18 -> head.

    Input must be exactly ``in_size`` square; see :class:`CompressionModule` for the options.
    """
    backbone = _compressed("seresnet18", in_chans, in_size, ratio, compress_width, compress_chans)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def compressed_seresnet34(in_chans: int = 1, in_size: int = 1024, ratio: int = 4,
                          compress_width: int = 16, compress_chans: int = 3, sex_units: int = 32,
                          hidden: Sequence[int] = _HIDDEN, dropout: float = 0.5) -> BoneAgeModel:
    """CompressionModule -> SE-ResNet34 -> head (C + S + I with a deeper SE-ResNet)."""
    backbone = _compressed("seresnet34", in_chans, in_size, ratio, compress_width, compress_chans)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def compressed_seresnet50(in_chans: int = 1, in_size: int = 1024, ratio: int = 4,
                          compress_width: int = 16, compress_chans: int = 3, sex_units: int = 32,
                          hidden: Sequence[int] = _HIDDEN, dropout: float = 0.5) -> BoneAgeModel:
    """CompressionModule -> SE-ResNet50 -> head (C + S + I with a bottleneck SE-ResNet)."""
    backbone = _compressed("seresnet50", in_chans, in_size, ratio, compress_width, compress_chans)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def compressed_resnet18(in_chans: int = 1, in_size: int = 1024, ratio: int = 4,
                        compress_width: int = 16, compress_chans: int = 3, sex_units: int = 32,
                        hidden: Sequence[int] = _HIDDEN, dropout: float = 0.5) -> BoneAgeModel:
    """The paper's C + I ablation: CompressionModule -> plain ResNet18 (no SE) -> head."""
    backbone = _compressed("resnet18", in_chans, in_size, ratio, compress_width, compress_chans)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, output_dropout=dropout)


@register_model
def vgg16(in_chans: int = 1, sex_units: int = 32, hidden: Sequence[int] = _HIDDEN,
          dropout: float = 0.5) -> BoneAgeModel:
    """VGG-16 (timm ``vgg16``: 13 3x3 convs, no BN) from scratch, the paper's table 1 baseline.

    Only the convolutional ``features`` are used, average-pooled by the model: timm's
    ``pre_logits`` (the fc6/fc7 ``ConvMlp``, 512 -> 4096 -> 4096 as a 7x7 conv) is dropped,
    because it would be unused by ``forward_features`` (parameters without gradient) and its
    7x7 kernel silently upsamples the 4x4 map of a 128 px input. The shared head's hidden
    layers stand in for the FC layers. Any input side >= 32 works (tested at 128).
    """
    backbone = timm.create_model("vgg16", pretrained=False, num_classes=0, global_pool="",
                                 in_chans=in_chans)
    backbone.prune_intermediate_layers(prune_head=True)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, output_dropout=dropout)
