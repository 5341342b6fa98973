"""``boneage complexity``: parameters, memory, file size and CPU time per image of models
(the work is :mod:`boneage.evaluation.complexity`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import positive_int, print_json
from boneage.errors import InputError
from boneage.evaluation.complexity import boneagenet_variants, complexity_table, format_complexity
from boneage.models import list_models
from boneage.models.inception_v3_scaled import MIN_INPUT_SIDE


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``complexity`` to its parser ``s``."""
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


def run(args: argparse.Namespace) -> int:
    """Measure the models and print the table; 0."""
    if args.boneagenet:
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


def _complexity_models(args: argparse.Namespace) -> list[str]:
    """The registry names of ``--models``, checked with the patch settings."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise InputError(f"unknown model(s) {unknown}; valid names: {', '.join(list_models())}")
    if args.patch_size < 1 or args.patches < 1:
        raise InputError(f"--patch-size and --patches must be >= 1, got {args.patch_size}, {args.patches}")
    return names
