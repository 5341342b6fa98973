"""Model files, the Predictor and view aggregation."""

from boneage.inference.aggregate import AGGREGATES, aggregate, tune_percentile
from boneage.inference.modelfile import build_model, load_model_file, read_model_metadata, save_model_file
from boneage.inference.predictor import Prediction, Predictor, default_model_path

__all__ = ["AGGREGATES", "aggregate", "tune_percentile", "build_model", "load_model_file",
           "read_model_metadata", "save_model_file", "Prediction", "Predictor",
           "default_model_path"]
