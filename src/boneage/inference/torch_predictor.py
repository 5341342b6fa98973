"""A :class:`~boneage.inference.predictor.Predictor` whose network runs in PyTorch.

The training side, Grad-CAM, calibration and export predict with this one; the light install,
which has no PyTorch, never imports it (:func:`boneage.inference.loader.load_predictor` reaches
it only for a ``.safetensors`` model file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from boneage.config import Recipe
from boneage.errors import InputError
from boneage.inference.modelfile import load_model_extras, read_model_metadata
from boneage.inference.predictor import Predictor, check_can_predict
from boneage.inference.torch_model import load_model_file
from boneage.transforms import network_input


class TorchPredictor(Predictor):
    """Runs a PyTorch bone-age model (a ``BoneAgeModel`` or anything with its ``forward(x,
    male)``, ``forward_features`` and ``pool``) on images as its recipe says."""

    def __init__(self, model: torch.nn.Module, recipe: Recipe, device: str = "cpu",
                 batch_size: int = 64, info: dict | None = None, quality_gate=None,
                 calibration=None):
        self.model = model.to(device).eval()
        self.device = device
        self._setup(recipe, batch_size, info, quality_gate, calibration)

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu",
                  threads: int | None = None) -> "TorchPredictor":
        """Load a PyTorch model file; ``threads`` calls ``torch.set_num_threads``
        (process-wide), None leaves PyTorch's own default (one per core)."""
        path = Path(path)
        if threads is not None:
            if int(threads) < 1:
                raise InputError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        check_can_predict(read_model_metadata(path)[0], path)
        model, recipe, info = load_model_file(path, device)
        gate, calibration = load_model_extras(path)
        return cls(model, recipe, device=device, info=info, quality_gate=gate, calibration=calibration)

    @property
    def uses_sex(self) -> bool:
        # A per-sex model (boneage.models.per_sex) says so itself: it has no one head to ask.
        routed = getattr(self.model, "uses_sex", None)
        return bool(routed) if routed is not None else bool(getattr(self.model.head, "uses_sex", True))

    def to_input(self, views: np.ndarray) -> torch.Tensor:
        """Network input tensor (N, C, h, w) from views in [0, 1], on the predictor's device."""
        return torch.from_numpy(network_input(views, self.recipe)).to(self.device)

    def _run(self, views: np.ndarray, male: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(views), self.batch_size):
                x = self.to_input(views[i:i + self.batch_size])
                s = torch.as_tensor(male[i:i + self.batch_size], dtype=torch.float32, device=self.device)
                out.append(self.model(x, s).float().cpu().numpy())
        t = self.recipe.target
        return np.concatenate(out) * t.std + t.mean

    def features(self, views: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(views), self.batch_size):
                x = self.to_input(views[i:i + self.batch_size])
                out.append(self.model.pool(self.model.forward_features(x)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
