"""``boneage calibrate``: fit a model file's prediction interval and quality gate (the work
is :mod:`boneage.evaluation.calibrate`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import (
    add_labelled_folder, positive_int, print_json, refuse_overwrite, require_labelled_folder,
)
from boneage.errors import InputError
from boneage.evaluation.calibrate import GATE_CLASSIFIERS, CalibrationSettings, calibrate_model_file


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``calibrate`` to its parser ``s``."""
    add_labelled_folder(s)
    s.add_argument("--model", help="model file to calibrate (default: the bundled model)")
    s.add_argument("--out", required=True, metavar="FILE.safetensors", help="the calibrated model file to write")
    s.add_argument("--level", type=float, default=0.9, help="interval coverage to aim for (default 0.9)")
    s.add_argument("--bands", type=positive_int, default=3, help="bands of predicted age, each with its own width")
    s.add_argument("--fit-images", type=positive_int, default=1200,
                   help="training radiographs the gate's classifiers are fitted on (default 1200)")
    s.add_argument("--fit-all-under", type=float, default=36.0, metavar="MONTHS",
                   help="besides those, every training radiograph with a bone age below MONTHS, the "
                        "youngest hands a random draw leaves too few of (default 36; 0: none)")
    s.add_argument("--negatives", metavar="DIR",
                   help="real radiographs that are not hands (labels.csv id,body_part + images/, e.g. "
                        "xray-other): the gate is fitted on one part, seeded and stratified by body "
                        "part, and measured on the rest")
    s.add_argument("--negatives-test-fraction", type=float, default=0.5, metavar="F",
                   help="share of each body part only measured, never fitted on (default 0.5)")
    s.add_argument("--classifier", choices=GATE_CLASSIFIERS, default=GATE_CLASSIFIERS[0],
                   help="the gate's hand-or-not classifier: multinomial logistic regression (default) "
                        "or the linear discriminant it replaced")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the calibrated model file and print what was measured; 0."""
    require_labelled_folder(args, "calibrate")
    out = refuse_overwrite(args.out, args.force)
    if not 0.5 <= args.level < 1.0:
        raise InputError(f"--level must be in [0.5, 1), got {args.level}")
    if args.fit_all_under < 0:
        raise InputError(f"--fit-all-under must be >= 0 months, got {args.fit_all_under}")
    settings = CalibrationSettings(level=args.level, bands=args.bands, seed=args.seed,
                                   n_fit_radiographs=args.fit_images, fit_all_under_months=args.fit_all_under,
                                   negatives=args.negatives,
                                   negatives_test_fraction=args.negatives_test_fraction,
                                   classifier=args.classifier)
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
