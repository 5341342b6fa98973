"""``boneage compare``: a Markdown table comparing finished training runs or ``evaluate
--out`` folders (the work is :mod:`boneage.evaluation.runs`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import print_json
from boneage.evaluation.plots import plot_errors_by_band
from boneage.evaluation.runs import (
    add_differences, band_tables, bands_table, name_runs_uniquely, runs_table, summarize_run,
)


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``compare`` to its parser ``s``."""
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--json", action="store_true")
    s.add_argument("--bands", metavar="PLOT.png",
                   help="also tabulate MAE and mean signed error by age band (0-5, 5-10, 10-13, 13-15, "
                        "15+ years) and sex on the images every run predicted, and plot them here")


def run(args: argparse.Namespace) -> int:
    """Print the table of the runs (the first is the reference); 0."""
    rows = add_differences(name_runs_uniquely([summarize_run(r) for r in args.runs], args.runs))
    bands = band_tables(rows) if args.bands else None
    if args.bands:
        plot_errors_by_band(bands, args.bands)
    if args.json:
        runs = [{k: v for k, v in r.items() if k not in ("val_predictions", "val_male")} for r in rows]
        print_json({"runs": runs, "bands": bands} if bands else runs)
    else:
        print(runs_table(rows))
        if bands:
            print()
            print(bands_table(bands))
    return 0
