"""How ``boneage`` finds its commands: a table of names, and only the invoked command's module
imported (issue 29), so that ``boneage --help`` is fast and the light install stays light."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import boneage.cli
from boneage.cli.main import COMMANDS, build_parser

CLI = Path(boneage.cli.__file__).parent
#: The modules of boneage.cli that are not a command's: they must import none of the commands.
SHARED = {"boneage.cli", "boneage.cli.main", "boneage.cli.common", "boneage.cli.age_arguments"}


def _cli_imports(path: Path) -> set[str]:
    """The boneage.cli modules ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("boneage.cli"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("boneage.cli")}
    return found


def _sys_modules_after(*argv: str) -> list[str]:
    """The boneage.cli modules a fresh process has imported after ``main(argv)``."""
    code = ("import contextlib, io, json, sys\n"
            "from boneage.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    main({list(argv)!r})\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'boneage.cli' or m.startswith('boneage.cli.'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_command_module_exists_and_has_the_two_functions():
    for name, (module, help_line) in COMMANDS.items():
        path = CLI / f"{module.rsplit('.', 1)[-1]}.py"
        tree = ast.parse(path.read_text())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"add_arguments", "run"} <= functions, name
        assert help_line and "\n" not in help_line


def test_no_command_module_imports_another_or_main():
    commands = {module for module, _ in COMMANDS.values()}
    for path in CLI.glob("*.py"):
        module = "boneage.cli" + ("" if path.stem == "__init__" else f".{path.stem}")
        assert module in commands | SHARED, f"{path.name}: neither a command nor shared"
        imported = _cli_imports(path)
        assert not imported & commands, f"{path.name} imports a command's module: {imported & commands}"
        if module != "boneage.cli.main":
            assert "boneage.cli.main" not in imported, path.name
    # common is what main imports for every command: nothing else of the package's cli.
    assert _cli_imports(CLI / "common.py") == set()


def test_the_parser_fills_only_the_command_it_is_given():
    choices = build_parser("info")._subparsers._group_actions[0].choices
    assert list(choices) == list(COMMANDS)
    assert "--json" in choices["info"].format_help()
    assert "--sex" not in choices["predict"].format_help()  # predict's module was not asked for


@pytest.mark.parametrize("argv, expected", [
    (["--help"], set()),
    (["--version"], set()),
    (["--help", "train"], set()),  # the top-level help comes first: no command's module
    (["info", "--help"], {"boneage.cli.info"}),
    (["dicom-node", "--help"], {"boneage.cli.dicom_node"}),
])
def test_only_the_invoked_commands_module_is_imported(argv, expected):
    imported = set(_sys_modules_after(*argv))
    assert imported - SHARED == expected
