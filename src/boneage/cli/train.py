"""``boneage train``: train a recipe and write a model file, metrics and plots (the work is
:func:`boneage.evaluation.training.fit`: the loop with every task and the validation report).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.config import load_recipe
from boneage.evaluation.training import fit


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train`` to its parser ``s``."""
    s.add_argument("config", metavar="CONFIG")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 data.root=/data")
    s.add_argument("--out", help="output folder (default runs/<recipe name>)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that already holds a run or model file")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Train the recipe (with its overrides) into ``--out``; 0."""
    recipe = load_recipe(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    fit(recipe, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0
