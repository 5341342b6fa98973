"""``boneage baseline``: classical kNN / SVM regression on image features, the papers'
baselines (the work is :mod:`boneage.evaluation.baselines`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import positive_int, print_json
from boneage.evaluation.baselines import run_baseline
from boneage.evaluation.metrics import format_summary


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``baseline`` to its parser ``s``."""
    s.add_argument("kind", choices=["knn", "svm"])
    s.add_argument("--train", required=True, metavar="DIR", help="labelled folder to fit on (labels.csv + images/)")
    s.add_argument("--eval", required=True, metavar="DIR", help="labelled folder to evaluate on")
    s.add_argument("--size", type=positive_int, default=32, help="images are resized to SIZE x SIZE (default 32)")
    s.add_argument("--limit", type=positive_int, help="use only the first N labelled images of each folder")
    s.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")


def run(args: argparse.Namespace) -> int:
    """Fit the baseline on ``--train``, evaluate it on ``--eval`` and print the summary; 0."""
    summary = run_baseline(args.kind, args.train, args.eval, size=args.size, limit=args.limit)
    if args.json:
        print_json(summary)
    else:
        print(f"{args.kind} baseline on {args.size}x{args.size} image features, "
              f"trained on {summary['n_train']} images")
        print(format_summary(summary))
    return 0
