"""The README's first two commands are what CI runs, in that order."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_commands():
    blocks = re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install" in install and "boneage predict" in install
    assert "pytest" in tests
    # Besides the two commands, CI only sets up its shell and a fresh virtual environment.
    setup = ("#", "set ", "cd ", "export ", "venv=", "python3 -m venv ", "source ")
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(setup)]
    assert ci == [install, tests]


def test_ci_installs_into_a_new_virtual_environment():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    venv = next(i for i, line in enumerate(lines) if line.startswith("python3 -m venv "))
    activate = next(i for i, line in enumerate(lines) if line.startswith("source ") and "/bin/activate" in line)
    first_pip = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert venv < activate < first_pip
