"""One way from a model file to a :class:`~boneage.inference.predictor.Predictor`, whichever
runtime the file needs."""

from __future__ import annotations

from pathlib import Path

from boneage.errors import InputError
from boneage.inference.onnx_model import OnnxPredictor
from boneage.inference.predictor import Predictor, default_model_path, require_torch


def load_predictor(path: str | Path | None = None, device: str = "cpu",
                   threads: int | None = None) -> Predictor:
    """Load a model file (the bundled default when ``path`` is None).

    A ``.onnx`` file (written by ``boneage export``) gives an
    :class:`~boneage.inference.onnx_model.OnnxPredictor` running in onnxruntime with
    ``threads`` intra-op threads (default 1: one per concurrent request). A PyTorch model file
    gives a :class:`~boneage.inference.torch_predictor.TorchPredictor`; ``threads`` calls
    ``torch.set_num_threads`` (process-wide), None leaves PyTorch's own default (one per core).
    """
    path = default_model_path() if path is None else Path(path)
    if not path.exists() and path.parent == default_model_path().parent:
        raise InputError("the bundled default model is missing from this installation", path)
    if path.suffix.lower() == ".onnx":
        return OnnxPredictor.from_file(path, device=device, threads=threads)
    require_torch("a PyTorch model file (.safetensors)", path)
    # boundary: PyTorch, reached only for a .safetensors file; the light install predicts from
    # the ONNX export and has no PyTorch to import.
    from boneage.inference.torch_predictor import TorchPredictor

    return TorchPredictor.from_file(path, device=device, threads=threads)
