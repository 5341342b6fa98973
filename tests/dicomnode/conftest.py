"""Fixtures of the DICOM node tests: the logs of the ``boneage`` loggers, the ONNX model."""

from __future__ import annotations

import logging

import pytest

from nodekit import LogCollector


@pytest.fixture(scope="module")
def node_logs():
    """Every ``boneage`` log record of the module's tests, at DEBUG (the workers log at the
    level the node's process has when it starts them)."""
    logger = logging.getLogger("boneage")
    collector = LogCollector()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    yield collector
    logger.removeHandler(collector)
    logger.setLevel(old_level)


@pytest.fixture(scope="session")
def onnx_model() -> str:
    """The bundled model's ONNX form: what the light install predicts with; workers load it
    without PyTorch, so they start in seconds."""
    from boneage.inference.predictor import default_model_path

    return str(default_model_path("onnx"))
