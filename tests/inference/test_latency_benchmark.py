"""benchmarks/latency.py compares PyTorch with onnxruntime, not the ONNX export with itself."""

from pathlib import Path

import pytest

from benchmark_script import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("latency")


def test_the_default_model_is_the_bundled_pytorch_file(bench):
    # The bundled default for prediction is the ONNX export; the benchmark must not take it.
    assert Path(bench.pytorch_model(None)).name == "default_model.safetensors"
    assert bench.pytorch_model("mine.safetensors") == "mine.safetensors"


def test_an_onnx_file_as_the_pytorch_model_is_refused_in_one_line(bench):
    with pytest.raises(SystemExit, match=r"--model must be the PyTorch model file .*got m\.onnx; pass its export"):
        bench.main(["--agreement-only", "--model", "m.onnx"])
