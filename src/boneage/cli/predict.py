"""``boneage predict``: the bone age of one or more radiographs, printed or written to a CSV.

One of the commands of the light install (no PyTorch): nothing it imports may need the
``train`` extra. :func:`add_arguments` fills its parser, :func:`run` runs it
(:mod:`boneage.cli.main` dispatches to both).
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from boneage import api
from boneage.cli.age_arguments import age_months, calendar_date
from boneage.cli.common import EXIT_REFUSED, EXIT_USER_ERROR, cli_wording, positive_int, print_json
from boneage.clinical import resolve_chronological_age
from boneage.inference.files import (
    ResultsCSV, check_sex_ids, expand_inputs, parse_shard, read_sex_csv, take_shard,
)
from boneage.sex import Sex


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``predict`` to its parser ``s``."""
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively) or quoted glob patterns ('scans/**/*.dcm')")
    s.add_argument("--sex", help="M or F for every image (default: --sex-from, else the DICOM PatientSex tag)")
    s.add_argument("--sex-from", metavar="FILE.csv",
                   help="per-image sex: a CSV with an id (or image/path) column and a sex (M/F) or male (1/0) column")
    s.add_argument("--out", metavar="FILE.csv",
                   help="write one row per image to this CSV, with a progress bar; if it exists, "
                        "images already assessed or refused in it are skipped, those that ended in "
                        "an error retried, and new rows appended (resume)")
    s.add_argument("--shard", metavar="K/N",
                   help="assess only the K-th of N equal shares of the sorted inputs "
                        "(e.g. a Slurm array: $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT)")
    s.add_argument("--workers", type=positive_int, default=2,
                   help="threads decoding the next images while the model runs (default 2)")
    s.add_argument("--quiet", action="store_true", help="no progress bar (with --out on a terminal)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--json", action="store_true", help="one JSON object per image per line")
    s.add_argument("--birth-date", type=calendar_date, metavar="DATE",
                   help="child's birth date, YYYY-MM-DD or YYYYMMDD (with --study-date: the "
                        "chronological age for the clinical reading; default: the DICOM tags)")
    s.add_argument("--study-date", type=calendar_date, metavar="DATE",
                   help="date the radiograph was taken, YYYY-MM-DD or YYYYMMDD")
    s.add_argument("--age-months", type=age_months, metavar="MONTHS",
                   help="chronological age in months, 0-240 (used when the dates are not given)")
    s.add_argument("--force", action="store_true",
                   help="assess images the quality gate refuses (not a hand radiograph, unsure "
                        "orientation); the result says it was forced")


def _result_text(result) -> str:
    """``bone age 121.3 months (10.1 years), 90% interval 100.1-142.5 months, sex F``: the
    interval when the model carries one, else the spread of the views (which is not one)."""
    text = f"bone age {result.bone_age_text()}"
    if result.interval is not None:
        text += f", {result.interval}"
    elif result.n_views > 1:
        text += f", views spread {result.spread_months:.1f}"
    return text + f", sex {result.sex}"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def run(args: argparse.Namespace) -> int:
    """Assess every input; 0 when all were assessed, 3 when the gate refused some, 2 when
    some failed (an unreadable file, an unknown sex). Errors of single images are printed,
    one line each, and the others go on."""
    # Everything that can be wrong with the command line is found before the first image.
    sex_arg = Sex.parse_optional(args.sex)
    ages = {"birth_date": args.birth_date, "study_date": args.study_date, "age_months": args.age_months}
    if args.birth_date is not None and args.study_date is not None:
        resolve_chronological_age(**ages)  # a study before the birth is refused before any work
    shard = parse_shard(args.shard) if args.shard is not None else None
    paths = expand_inputs(args.images)
    sexes = None
    if args.sex_from is not None:
        sexes = read_sex_csv(args.sex_from)
        check_sex_ids(sexes, paths, args.sex_from)  # all inputs, not one shard: the CSV covers all
    if shard is not None:
        paths = take_shard(paths, *shard)
    table = ResultsCSV(args.out) if args.out else None
    failures = refusals = 0
    if table is not None:
        # Rows that ended in an error are assessed again (the cause, a missing sex or a file
        # being copied, is usually what the user fixed before rerunning); assessed and refused
        # rows are kept, and refusals count towards the exit status of the whole CSV.
        retried = table.forget([p for p in paths if (table.previous(p) or {}).get("error")])
        done = [row for row in map(table.previous, paths) if row is not None]
        refusals = sum(1 for row in done if row["quality"] == "refused")
        paths = [p for p in paths if table.previous(p) is None]
        if done or retried or table.repaired:
            print(f"boneage: resuming {table.path}: {len(done)} image(s) already there"
                  + (f"; retrying {retried} that ended in an error" if retried else "")
                  + ("; cut off a half-written last line" if table.repaired else ""), file=sys.stderr)
    predictor = api.load_predictor(args.model)
    records = api.predict_files(paths, sex_arg, sex_from=sexes, model=predictor, force=args.force,
                                workers=args.workers, **ages)
    if table is not None:
        assessed = 0
        # A bar only on a terminal: in a log file or a pipe its carriage-return redraws
        # interleave with the per-file lines, which tqdm can keep above it only on a screen.
        with table, tqdm(total=len(paths), unit="image", file=sys.stderr, dynamic_ncols=True,
                         disable=args.quiet or not _is_terminal(sys.stderr)) as bar:
            for record in records:
                record.error = cli_wording(record.error, args.command)
                table.write(record.row())
                failures += record.failed
                refusals += record.refused
                assessed += record.prediction is not None
                if record.error is not None:
                    kind = "refused" if record.refused else "error"
                    # Cleared, written, redrawn: the line lands above the bar, not in it.
                    tqdm.write(f"boneage: {kind}: {record.error}", file=sys.stderr)
                bar.update()
        print(f"wrote {len(paths)} row(s) to {table.path} ({assessed} assessed)")
        return EXIT_USER_ERROR if failures else EXIT_REFUSED if refusals else 0
    for record in records:
        if record.error is not None:
            record.error = cli_wording(record.error, args.command)
            refusals += record.refused
            failures += record.failed
            print(f"boneage: {'refused' if record.refused else 'error'}: {record.error}", file=sys.stderr)
            continue
        path, result = record.path, record.prediction
        row = {"image": str(path), **result.to_dict()}
        if args.json:
            print_json(row)
        else:
            print(f"{path}: {_result_text(result)}")
            if result.quality is not None and result.quality.corrections:
                print(f"  corrected before assessment: {'; '.join(result.quality.corrections)}")
            if result.quality is not None and result.quality.forced:
                print(f"  FORCED past the quality gate, which would have refused it: {result.quality.reason}")
            if result.clinical is not None:
                for line in result.clinical.lines():
                    print(f"  {line}")
    return EXIT_USER_ERROR if failures else EXIT_REFUSED if refusals else 0
