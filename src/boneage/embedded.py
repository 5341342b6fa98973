"""Networks that live inside a model file, addressed by the hash of their weights.

A preprocessing step may need a network of its own (the hand-crop U-Net today, the
segmentation net later). A model file carries that network's tensors, and its stored recipe
names it as ``"sha256:<hex>"`` instead of a file path, so the model file predicts the same from
any folder and machine. Loading the model file registers the network here; a transform that
meets such a reference takes the network from here.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch

from boneage.errors import ConfigError

PREFIX = "sha256:"
_NETWORKS: dict[str, torch.nn.Module] = {}


def tensors_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """A content hash of named tensors (names, dtypes, shapes and bytes), as hex."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def register(network: torch.nn.Module) -> str:
    """Keep ``network`` in memory under the hash of its weights; returns ``"sha256:<hex>"``."""
    ref = PREFIX + tensors_hash(network.state_dict())
    _NETWORKS[ref] = network
    return ref


def resolve(ref: str) -> torch.nn.Module:
    """The network registered under ``ref``."""
    if ref not in _NETWORKS:
        raise ConfigError(f"the network {ref[:19]}... is embedded in a model file; load that model "
                          "file (it registers the network) instead of building its recipe alone")
    return _NETWORKS[ref]
