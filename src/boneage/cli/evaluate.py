"""``boneage evaluate``: the MAE of a model on a labelled folder.

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage import api
from boneage.cli.common import add_labelled_folder, positive_int, print_json, require_labelled_folder
from boneage.evaluation import metrics


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``evaluate`` to its parser ``s``."""
    add_labelled_folder(s)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--limit", type=positive_int, help="evaluate only the first N labelled images")
    s.add_argument("--holdout", action="store_true",
                   help="evaluate only the images the model held back for validation when it was "
                        "trained on this folder (its split is stored in the model file)")
    s.add_argument("--out", help="also write predictions.csv, summary.json and plots here")
    s.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Predict every labelled image and print the summary (MAE, bias, ...); 0."""
    require_labelled_folder(args, "evaluate")
    summary = api.evaluate(args.data_dir, csv=args.csv, images=args.images, model=args.model,
                           holdout=args.holdout, limit=args.limit, out=args.out, progress=not args.quiet)
    if args.json:
        print_json(summary)
    else:
        print(metrics.format_summary(summary))
    return 0
