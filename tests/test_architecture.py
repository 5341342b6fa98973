"""The declared architecture (pyproject's import-linter contracts, docs/architecture.md) holds:
the layers, no cycles, no PyTorch on the light path, and imports at the top of each module."""

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "boneage"
#: Function-level imports of the package's own modules allowed, each at a marked boundary.
MAX_FUNCTION_LEVEL_IMPORTS = 20


def _contracts() -> dict:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _comment_above(lines: list[str], lineno: int) -> str:
    """The comment lines directly above line ``lineno`` (1-based), joined."""
    k, out = lineno - 2, []
    while k >= 0 and lines[k].strip().startswith("#"):
        out.insert(0, lines[k].strip())
        k -= 1
    return " ".join(out)


def function_level_imports(root: Path = PACKAGE) -> list[tuple[str, int, str, str]]:
    """``(module, line, imported module, comment above)`` of every import of a ``boneage``
    module made inside a function."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        module, is_pkg = _module_name(path, root), path.name == "__init__.py"
        for func in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom):
                    base = module.split(".")[: None if is_pkg else -1]
                    target = (".".join(base[: len(base) - node.level + 1] + [node.module or ""]).rstrip(".")
                              if node.level else node.module or "")
                elif isinstance(node, ast.Import):
                    target = node.names[0].name
                else:
                    continue
                if target == "boneage" or target.startswith("boneage."):
                    found.append((module, node.lineno, target, _comment_above(lines, node.lineno)))
    return sorted(set(found))


def test_imports_of_the_package_sit_at_the_top_of_their_modules():
    found = function_level_imports()
    assert len(found) <= MAX_FUNCTION_LEVEL_IMPORTS, "\n".join(f"{m}:{n} -> {t}" for m, n, t, _ in found)
    unmarked = [f"{m}:{n} -> {t}" for m, n, t, above in found if "boundary:" not in above]
    assert not unmarked, f"function-level imports without a '# boundary: why' comment: {unmarked}"


def test_the_count_sees_a_function_level_import(tmp_path):
    pkg = tmp_path / "boneage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    # boundary: why\n    from boneage import b\n"
                              "    from . import c\n    import json\n")
    assert [(m, t, "boundary:" in above) for m, _, t, above in function_level_imports(pkg)] == [
        ("boneage.a", "boneage", True), ("boneage.a", "boneage", False)]


def test_every_boundary_the_light_contract_ignores_is_marked_in_the_code():
    marked = {(m, t) for m, _, t, above in function_level_imports() if "boundary:" in above}
    for rule in _contracts()["light"]["ignore_imports"]:
        importer, imported = (s.strip() for s in rule.split("->"))
        assert any(m == importer and (t == imported or imported.startswith(t + ".")) for m, t in marked), rule


def test_the_diagram_in_docs_architecture_is_the_layers_contract():
    doc = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers: checked against pyproject.toml -->\n```\n(.*?)```", doc, re.S)
    assert block, "docs/architecture.md has no layers diagram"
    drawn = [re.split(r"\s{2,}", line.strip())[0] for line in block.group(1).splitlines()
             if line.strip() and not line.strip().startswith(("↓", "|"))]
    declared = [" | ".join(part.strip().removeprefix("boneage.") for part in layer.split("|"))
                for layer in _contracts()["layers"]["layers"]]
    assert drawn == declared


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter (the 'test' extra) is not installed")
def test_lint_imports_keeps_every_contract(tmp_path):
    exe = Path(sys.executable).parent / "lint-imports"
    # Its cache would land in src/; a fresh analysis is a few seconds.
    done = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout
