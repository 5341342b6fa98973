"""``boneage robustness``: how far the bone age moves when the same radiographs are prepared
differently (the work is :mod:`boneage.evaluation.robustness`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.cli.common import add_labelled_folder, positive_int, print_json, require_labelled_folder
from boneage.data.labels import load_samples
from boneage.data.split import holdout_subset
from boneage.errors import InputError
from boneage.evaluation.robustness import (
    format_robustness, paired_consistency, resolve_preparations, run_robustness,
    write_robustness_report,
)
from boneage.inference.loader import load_predictor


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``robustness`` to its parser ``s``."""
    add_labelled_folder(s)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--holdout", action="store_true",
                   help="only the images the model held back when it was trained on this folder")
    s.add_argument("--limit", type=positive_int, help="assess only the first N labelled images")
    s.add_argument("--preparations", metavar="NAMES",
                   help="comma-separated preparations (default: all; see docs/robustness.md)")
    s.add_argument("--pair-with", metavar="DIR",
                   help="a labelled folder holding other preparations of the same ids "
                        "(e.g. rsna-100px for rsna-raw13): reports their paired difference")
    s.add_argument("--out", help="write robustness.md/.csv/.json, per-image predictions and robustness.png here")
    s.add_argument("--title", help="title of the report and plot")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Predict every labelled image under every preparation and print (and with ``--out``
    write) how far the bone ages move; 0."""
    require_labelled_folder(args, "robustness")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    preps = resolve_preparations(
        [n.strip() for n in args.preparations.split(",") if n.strip()] if args.preparations else None)
    predictor = load_predictor(args.model)
    samples = load_samples(args.data_dir, args.csv, args.images, None if args.holdout else args.limit)
    if args.holdout:
        samples = holdout_subset(samples, predictor.recipe.data, predictor.info)[:args.limit]
    paired = load_samples(args.pair_with) if args.pair_with else None
    result = run_robustness(predictor, samples, preps, progress=not args.quiet)
    pairs = paired_consistency(predictor, samples, paired) if paired is not None else None
    if args.out:
        write_robustness_report(result, args.out, pairs, title=args.title or "")
    if args.json:
        print_json({"grid": result["grid"], "rows": result["rows"], "pairs": pairs})
    else:
        print(format_robustness(result, pairs))
        if args.out:
            print(f"report: {Path(args.out) / 'robustness.md'} (+ .csv, .json, .png)")
    return 0
