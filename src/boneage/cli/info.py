"""``boneage info``: what a model file is (name, hash, training data, validation MAE, date).

One of the commands of the light install (no PyTorch). :func:`add_arguments` fills its
parser, :func:`run` runs it (:mod:`boneage.cli.main` dispatches to both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.cli.common import print_json
from boneage.inference import default_model_path, read_model_metadata
from boneage.inference.modelfile import describe_model_file


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``info`` to its parser ``s``."""
    s.add_argument("model", nargs="?", help="model file (default: the bundled model)")
    s.add_argument("--json", action="store_true", help="the full stored recipe and training facts as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the model file's description (``--json``: its recipe and training facts); 0."""
    path = Path(args.model) if args.model else default_model_path()
    recipe, info = read_model_metadata(path)
    if args.json:
        print_json({"recipe": recipe.to_dict(), "info": info})
    else:
        print(describe_model_file(path, recipe, info))
        print("(boneage info --json prints the full recipe)")
    return 0
