"""The README's first two commands are what CI runs, in that order."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_commands():
    blocks = re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install" in install and "boneage predict" in install
    assert "pytest" in tests
    # Besides the two commands, CI only sets up its shell and a fresh virtual environment
    # (and removes it when it ends).
    setup = ("#", "set ", "cd ", "export ", "tmp=", "trap ", "venv=", "python3 -m venv ", "source ")
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(setup)]
    assert ci == [install, tests]


def test_ci_installs_into_a_new_virtual_environment():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    venv = next(i for i, line in enumerate(lines) if line.startswith("python3 -m venv "))
    activate = next(i for i, line in enumerate(lines) if line.startswith("source ") and "/bin/activate" in line)
    first_pip = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert venv < activate < first_pip
    # the environment lives in a temporary folder that goes when the run ends
    assert 'venv="$tmp/venv"' in lines and "trap 'rm -rf \"$tmp\"' EXIT" in lines


def test_the_readme_quotes_the_validation_mae_the_bundled_model_file_records():
    """`boneage info` prints the MAE the model file records; the README says the same, read
    from the file (the bundled model is replaced from time to time)."""
    from boneage.inference.modelfile import read_model_metadata, validation_mae
    from boneage.inference.onnx_model import read_onnx_model_metadata
    from boneage.inference.predictor import default_model_path

    onnx_mae = validation_mae(read_onnx_model_metadata(default_model_path("onnx"))[1])
    torch_mae = validation_mae(read_model_metadata(default_model_path("torch"))[1])
    assert onnx_mae == torch_mae and onnx_mae is not None
    quoted = f"{onnx_mae[0]:.2f}"
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The bundled model"):]
    section = section[:section.index("\n## ")]
    row = next(line for line in section.splitlines() if line.startswith("| 1,108 held-back images"))
    assert re.findall(r"\*\*(\d+\.\d+)\*\*", row.split("|")[-2]) == [quoted], row
    assert f"validation MAE {quoted} months" in section
