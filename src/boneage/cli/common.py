"""What the command modules of :mod:`boneage.cli` share: exit statuses, argument types,
output and wording.

Light on purpose: :mod:`boneage.cli.main` imports it for every command, ``boneage --help``
included, and it imports none of the command modules (nor anything heavy). The types of the
child's dates and age, which need more, are in :mod:`boneage.cli.age_arguments`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from boneage.errors import InputError, SexUnknown

#: A user error: a bad file, value or config (one line on stderr, no traceback).
EXIT_USER_ERROR = 2
#: The image was read but the quality gate refused to assess it (``--force`` overrides).
EXIT_REFUSED = 3
#: How to give the sex on the command line: ``predict`` reads it per image from a CSV too.
SEX_HINT = "give --sex M|F"
SEX_HINT_PREDICT = "give --sex M|F, or --sex-from CSV (columns id,sex) for per-image sexes"


def positive_int(text: str) -> int:
    """A whole number >= 1 (argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_labelled_folder(s: argparse.ArgumentParser) -> None:
    """DATA_DIR, --csv and --images: a labelled folder or the challenge's CSV layouts."""
    s.add_argument("data_dir", metavar="DATA_DIR", nargs="?")
    s.add_argument("--csv", help="label CSV in any RSNA layout (default DATA_DIR/labels.csv)")
    s.add_argument("--images", help="image folder (default DATA_DIR/images)")


def refuse_overwrite(path: str | os.PathLike, force: bool = False) -> Path:
    """``path`` as a Path, or an error if it exists and ``--force`` was not given."""
    out = Path(path)
    if out.exists() and not force:
        raise InputError("file exists; pass --force to overwrite it", out)
    return out


def print_json(obj) -> None:
    """Print ``obj`` as one line of JSON, flushed (a reader of the pipe gets it at once)."""
    print(json.dumps(obj, sort_keys=False), flush=True)


def cli_wording(error, command: str):
    """``error`` as the command line says it: a missing sex names the options that give it."""
    if isinstance(error, SexUnknown):
        return error.telling(SEX_HINT_PREDICT if command == "predict" else SEX_HINT)
    return error


def require_labelled_folder(args, command: str) -> None:
    """Refuse a command line that gives neither ``DATA_DIR`` nor ``--csv`` (see
    :func:`add_labelled_folder`)."""
    if not (args.data_dir or args.csv):
        raise InputError(f"{command} needs DATA_DIR or --csv")
