"""How a run does its arithmetic: mixed precision and memory format.

These are run settings (``train.amp``, ``train.channels_last``): they change speed and
rounding, not the method, so a run may resume with other values and the recipe's method
(``Recipe.method_dict``) does not include them.
"""

from __future__ import annotations

import contextlib

import torch

from boneage.errors import ConfigError

_NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(setting: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` asks for on ``device``; None means full precision.

    ``True`` is the device's best choice: bf16 on a CUDA GPU that has it (no scaler needed,
    fp32's range), fp16 on older GPUs, and full precision on a CPU, where bf16 is slower than
    fp32 unless the processor has bf16 units (ask for ``bf16`` explicitly there).
    """
    if setting is False:
        return None
    if setting is True:
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting not in _NAMED:
        raise ConfigError(f"train.amp must be false, true, bf16 or fp16, got {setting!r}")
    return _NAMED[setting]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (a no-op context for full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16: its narrow range underflows small
    gradients, while bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` (NHWC: faster convolutions on tensor cores) or the default."""
    return torch.channels_last if channels_last else torch.contiguous_format


def to_input(tensor: torch.Tensor, device: torch.device, fmt: torch.memory_format) -> torch.Tensor:
    """A batch tensor on ``device`` in memory format ``fmt`` (only 4-D tensors have one).

    ``non_blocking`` overlaps the copy with compute when the loader pinned the memory.
    """
    if tensor.dim() == 4:
        return tensor.to(device, non_blocking=True, memory_format=fmt)
    return tensor.to(device, non_blocking=True)
