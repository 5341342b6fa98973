"""Model files as ONNX, predicted with onnxruntime (the light install's runtime).

An ONNX file written by :func:`boneage.inference.onnx_export.export_onnx` carries everything the
:class:`~boneage.inference.predictor.Predictor` needs besides the network, in the ONNX model's
``metadata_props``: the recipe (preprocessing, views, aggregation, target scaling), the info,
the interval calibration, the quality gate (its arrays as base64 float32, exactly the values
of the source file) and the source model file's SHA-256. The graph takes ``x`` (N, C, H, W)
float32, normalised as :func:`boneage.transforms.network_input` does, and ``sex`` (N,)
float (1 = male, 0 = female; absent from the graph when the model does not use sex), with a
dynamic batch axis, and gives two outputs: ``age`` (N,), the scaled bone age, and
``features`` (N, D), the backbone's pooled features the quality gate reads.

:class:`OnnxPredictor` runs such a file with onnxruntime through the same preprocessing,
views, aggregation, interval and gate code as the PyTorch path (it is a
:class:`~boneage.inference.predictor.Predictor` with another network runner), so the two give
the same bone ages to float rounding. This module imports no PyTorch (import-linter checks it).

Threads: an :class:`OnnxPredictor` uses one intra-op thread unless told otherwise (``threads``):
a service answering several requests at once runs one prediction per request, and more
threads per prediction than cores makes them thrash (measured in ``benchmarks/latency.py``).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from boneage.config import Recipe
from boneage.errors import InputError
from boneage.fileutils import file_hash
from boneage.inference.interval import ConformalCalibration
from boneage.inference.predictor import Predictor, check_can_predict, torch_available
from boneage.inference.quality import _ARRAYS, QualityGate
from boneage.transforms import network_input
#: ``boneage_format`` of an exported ONNX file (the safetensors files say "1").
ONNX_FORMAT = "onnx-1"
#: Network inputs and outputs of an exported graph.
INPUT_NAMES = ("x", "sex")
OUTPUT_NAMES = ("age", "features")
#: Intra-op threads of a session when the caller does not say (one per concurrent request).
DEFAULT_THREADS = 1


def _encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode_array(d: dict) -> np.ndarray:
    flat = np.frombuffer(base64.b64decode(d["float32_base64"]), dtype="<f4")
    return flat.reshape(d["shape"]).astype(np.float64)


def gate_to_json(gate) -> str:
    """A :class:`~boneage.inference.quality.QualityGate` as one JSON string: its thresholds
    and facts as in a model file, its arrays as float32 (as a model file stores them)."""
    return json.dumps({"thresholds": json.loads(gate.to_metadata()),
                       "arrays": {k: _encode_array(getattr(gate, k)) for k in _ARRAYS}})


def gate_from_json(text: str):
    """The :class:`~boneage.inference.quality.QualityGate` written by :func:`gate_to_json`;
    the same float64 arrays as :meth:`QualityGate.from_stored` gives for the source file."""
    d = json.loads(text)
    return QualityGate.from_arrays({k: _decode_array(d["arrays"][k]) for k in _ARRAYS}, d["thresholds"])


def _session(path: Path, threads: int, device: str):
    """An onnxruntime session for ``path``; one-line InputError when it cannot be run."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("running an ONNX model needs the onnxruntime package (pip install onnxruntime)",
                         path) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads spin by default, burning cores another request could use.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads > 1 else "1")
    options.log_severity_level = 3  # errors only: its warnings are about graph internals
    if device == "cpu":
        providers = ["CPUExecutionProvider"]
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(f"device {device!r} asked for, but this onnxruntime has no CUDA "
                             f"provider (it has {', '.join(ort.get_available_providers())})", path)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        raise InputError(f"ONNX models run on 'cpu' or 'cuda', got device {device!r}", path)
    if not path.is_file():
        raise InputError("no such model file", path)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise InputError(_load_failure(str(exc), ort.__version__), path) from None


def _load_failure(message: str, version: str) -> str:
    """One line for an onnxruntime load failure: the opset when that is the problem, else the
    message without its C++ source location."""
    opset = re.search(r"Opset (\d+) is under development", message)
    if opset:
        till = re.search(r"is till opset (\d+)", message)
        return (f"the model's opset {opset.group(1)} is newer than onnxruntime {version} runs"
                + (f" (up to {till.group(1)}); re-export with --opset {till.group(1)} or lower" if till else ""))
    ir = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", message)
    if ir:
        return (f"the model file's ONNX IR version {ir.group(1)} is newer than onnxruntime {version} "
                f"reads (up to {ir.group(2)}); install a newer onnxruntime, or export the model "
                f"again with the onnx package pinned in constraints.txt")
    text = " ".join(message.split())
    # "... failed:/onnxruntime_src/...h:46 void f(...) What went wrong" -> "What went wrong"
    text = re.sub(r"/onnxruntime_src/\S+ [^)]*\)+ ?", "", text)
    return f"onnxruntime cannot load this ONNX model ({text[:300] or 'no reason given'})"


def read_onnx_metadata(session, path: str | Path) -> dict[str, str]:
    """The boneage metadata of a loaded ONNX session; InputError when it has none."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("boneage_format") != ONNX_FORMAT or "recipe" not in meta:
        raise InputError("an ONNX model without boneage metadata (no embedded recipe); "
                         "write one with `boneage export MODEL --format onnx`", path)
    return meta


def _parse_metadata(meta: dict[str, str], path) -> dict[str, Any]:
    """The boneage metadata of an ONNX file as objects (recipe, info, interval, gate,
    source, uses_sex); one-line InputError when broken."""
    try:
        return {"recipe": Recipe.from_dict(json.loads(meta["recipe"])),
                "info": json.loads(meta.get("info", "{}")),
                "calibration": (ConformalCalibration.from_dict(json.loads(meta["interval"]))
                                if "interval" in meta else None),
                "gate": gate_from_json(meta["quality"]) if "quality" in meta else None,
                "source": json.loads(meta.get("source_model", "{}")),
                "uses_sex": bool(json.loads(meta.get("uses_sex", "true")))}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"broken boneage metadata in the ONNX model ({str(exc).splitlines()[0]})",
                         path) from None


def read_onnx_model_metadata(path: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """``(recipe, info)`` of an exported ONNX file, as :func:`read_model_metadata` gives for a
    model file; ``info["source_model"]`` names the file it was exported from."""
    path = Path(path)
    parsed = _parse_metadata(read_onnx_metadata(_session(path, DEFAULT_THREADS, "cpu"), path), path)
    return parsed["recipe"], {**parsed["info"], "source_model": parsed["source"]}


class OnnxPredictor(Predictor):
    """A :class:`~boneage.inference.Predictor` whose network runs in onnxruntime.

    Preprocessing, views, aggregation, interval and quality gate are the Predictor's own
    code; only :meth:`_run` (bone ages of views) and :meth:`features` (the gate's pooled
    features) go through the ONNX session. ``info["model_sha256"]`` is the ONNX file's hash
    (its identity); ``info["source_model"]`` names the model file it was exported from.
    """

    def __init__(self, session, recipe: Recipe, *, batch_size: int = 64, info: dict | None = None,
                 quality_gate=None, calibration=None, uses_sex: bool = True,
                 path: str | Path | None = None):
        self._setup(recipe, batch_size, info, quality_gate, calibration)
        self.session = session
        self.device = "cpu"
        self.path = None if path is None else Path(path)
        self._uses_sex = uses_sex
        self._inputs = {i.name for i in session.get_inputs()}
        missing = sorted({"x"} - self._inputs | set(OUTPUT_NAMES) - {o.name for o in session.get_outputs()})
        if missing:
            raise InputError(f"the ONNX graph lacks {', '.join(missing)} (inputs x[, sex]; outputs "
                             f"age, features)", path)

    @classmethod
    def from_file(cls, path: str | Path | None = None, device: str = "cpu",
                  threads: int | None = None) -> "OnnxPredictor":
        """Load an ONNX file written by :func:`export_onnx`, with ``threads`` intra-op threads
        (default :data:`DEFAULT_THREADS`, one per concurrent request)."""
        if path is None:
            raise InputError("an ONNX predictor needs the path of an .onnx file")
        path = Path(path)
        threads = DEFAULT_THREADS if threads is None else int(threads)
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        session = _session(path, threads, device)
        parsed = _parse_metadata(read_onnx_metadata(session, path), path)
        check_can_predict(parsed["recipe"], path)
        info = {**parsed["info"], "model_sha256": file_hash(path), "source_model": parsed["source"],
                "threads": threads}
        predictor = cls(session, parsed["recipe"], info=info, quality_gate=parsed["gate"],
                        calibration=parsed["calibration"], uses_sex=parsed["uses_sex"], path=path)
        predictor.device = device
        return predictor

    @property
    def model(self):
        """There is no PyTorch model behind an ONNX file; what needs one (Grad-CAM, batch
        evaluation) says so in one line."""
        raise InputError("this is an ONNX model: this needs the PyTorch model file (.safetensors) "
                         "it was exported from", self.path)

    @property
    def uses_sex(self) -> bool:
        return self._uses_sex

    def source_model_file(self) -> Path | None:
        """The PyTorch model file this ONNX file was exported from, where it lies beside it
        with the hash recorded at export (a different file of that name is not its source)."""
        source = self.info.get("source_model") or {}
        if self.path is None or not source.get("file"):
            return None
        candidate = self.path.parent / source["file"]
        if not candidate.is_file():
            return None
        if source.get("sha256") and file_hash(candidate) != source["sha256"]:
            return None
        return candidate

    @property
    def gradcam_unavailable(self) -> str | None:
        if not torch_available():
            return "Grad-CAM needs PyTorch (the 'train' extra), which this installation lacks"
        if self.source_model_file() is None:
            return "Grad-CAM needs the PyTorch model file this ONNX model was exported from, beside it"
        return None

    def to_input(self, views: np.ndarray) -> np.ndarray:
        """Network input (N, C, h, w) float32 from views in [0, 1] (no PyTorch needed)."""
        return network_input(views, self.recipe)

    def _feed(self, views: np.ndarray, male: np.ndarray | None) -> dict:
        feed = {"x": self.to_input(views)}
        if "sex" in self._inputs:
            feed["sex"] = (np.zeros(len(views), np.float32) if male is None
                           else np.ascontiguousarray(male, dtype=np.float32))
        return feed

    def _run(self, views: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Bone age in months for a stack of views with one sex flag (1 = male) per view."""
        out = [self.session.run(["age"], self._feed(views[i:i + self.batch_size], male[i:i + self.batch_size]))[0]
               for i in range(0, len(views), self.batch_size)]
        t = self.recipe.target
        return np.concatenate(out).astype(np.float32) * t.std + t.mean

    def features(self, views: np.ndarray) -> np.ndarray:
        """Pooled backbone features of views (V, h, w) in [0, 1], shape (V, D)."""
        # The features do not depend on sex; a zero flag only satisfies the graph's input.
        out = [self.session.run(["features"], self._feed(views[i:i + self.batch_size], None))[0]
               for i in range(0, len(views), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


