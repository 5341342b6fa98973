"""Networks that live inside a model file, addressed by the hash of their weights.

A preprocessing step may need a network of its own (the hand-crop U-Net today, the
segmentation net later). A model file carries that network's tensors, and its stored recipe
names it as ``"sha256:<hex>"`` instead of a file path, so the model file predicts the same from
any folder and machine. Loading the model file registers the network here; a transform that
meets such a reference takes the network from here.
"""

from __future__ import annotations

from typing import Any

from boneage.errors import ConfigError

PREFIX = "sha256:"
_NETWORKS: dict[str, Any] = {}


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def register(network: Any, weights_hash: str) -> str:
    """Keep ``network`` in memory under the hash of its weights (hex, computed by the
    framework that holds them: :func:`boneage.inference.torch_model.tensors_hash`); returns
    ``"sha256:<hex>"``. This module holds networks without importing their framework, so a
    preprocessing step can meet a reference on the light path."""
    ref = PREFIX + weights_hash
    _NETWORKS[ref] = network
    return ref


def resolve(ref: str) -> Any:
    """The network registered under ``ref``."""
    if ref not in _NETWORKS:
        raise ConfigError(f"the network {ref[:19]}... is embedded in a model file; load that model "
                          "file (it registers the network) instead of building its recipe alone")
    return _NETWORKS[ref]
