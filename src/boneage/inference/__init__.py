"""Prediction from model files: the Predictor (PyTorch or onnxruntime), model-file metadata,
view aggregation, the interval and the quality gate.

Only what the light install can import is named here; the PyTorch side lives in
:mod:`~boneage.inference.torch_model` (build, save, load networks),
:mod:`~boneage.inference.torch_predictor` and :mod:`~boneage.inference.onnx_export`.
"""

from boneage.inference.aggregate import AGGREGATES, aggregate, tune_percentile
from boneage.inference.loader import load_predictor
from boneage.inference.modelfile import read_model_metadata
from boneage.inference.predictor import Prediction, Predictor, default_model_path

__all__ = ["AGGREGATES", "aggregate", "tune_percentile", "load_predictor", "read_model_metadata",
           "Prediction", "Predictor", "default_model_path"]
