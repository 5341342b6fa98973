"""``boneage sweep``: train every combination of a grid of recipe settings and tabulate them.

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both). The work is :mod:`boneage.evaluation.sweep`; this module turns the
command line into a :class:`~boneage.evaluation.sweep.Sweep`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from boneage.errors import InputError
from boneage.evaluation.sweep import (
    Sweep, is_sweep_file, parse_grid_option, parse_seeds, plan_sweep, read_sweep, run_sweep,
)


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``sweep`` to its parser ``s``."""
    s.add_argument("spec", metavar="RECIPE_OR_SWEEP",
                   help="a recipe (then give --grid) or a sweep file (recipe, overrides, grid, variants, seeds)")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides every run shares, on top of the sweep file's (e.g. data.root=/data)")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis, values in YAML (model.options.width=0.7,1.0,1.4; "
                        "'model.options.repeats=[2,1,2],[4,3,3]'); repeatable, replaces the file's axis of that key")
    s.add_argument("--seeds", metavar="S1,S2", help="train.seed of each combination (default: the file's, else the recipe's)")
    s.add_argument("--out", metavar="DIR", help="output folder (default runs/sweeps/<sweep name>)")
    s.add_argument("--train-mae-images", type=int, metavar="N",
                   help="training images the train MAE is measured on after each run (default 1000; 0: none)")
    s.add_argument("--dry-run", action="store_true",
                   help="check every run on a synthetic radiograph and list the run folders; train nothing")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def sweep_from_args(args: argparse.Namespace) -> Sweep:
    """The :class:`~boneage.evaluation.sweep.Sweep` a command line asks for."""
    spec = Path(args.spec)
    if not spec.is_file():
        raise InputError("no such recipe or sweep file", spec)
    if is_sweep_file(spec):
        sweep = read_sweep(spec)
    else:
        sweep = Sweep(recipe=spec, name=f"{spec.stem}-sweep")
    sweep.overrides = sweep.overrides + list(args.overrides)
    for text in args.grid:
        key, values = parse_grid_option(text)
        sweep.grid[key] = values  # a key given again replaces the file's axis, keeping its place
    if args.seeds is not None:
        sweep.seeds = parse_seeds(args.seeds)
    if args.train_mae_images is not None:
        if args.train_mae_images < 0:
            raise InputError(f"--train-mae-images must be >= 0, got {args.train_mae_images}")
        sweep.train_mae_images = args.train_mae_images
    if not sweep.grid and sweep.variants == [{}] and (sweep.seeds is None or len(sweep.seeds) < 2):
        raise InputError("a sweep needs something to vary: --grid KEY=V1,V2, variants or two --seeds", spec)
    return sweep


def run(args: argparse.Namespace) -> int:
    """Plan (and check) every run, then train them; with ``--dry-run`` only list them."""
    sweep = sweep_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / sweep.name
    if args.dry_run:
        runs = plan_sweep(sweep)
        for r in runs:
            settings = " ".join(f"{k}={json.dumps(v)}" for k, v in r.settings.items())
            print(f"{out / r.run}: {settings or '(the recipe)'} train.seed={r.seed}")
        print(f"{len(runs)} run(s) checked; nothing trained (--dry-run)")
        return 0
    rows = run_sweep(sweep, out, progress=not args.quiet)
    print(f"{len(rows)} run(s) finished; table: {out / 'sweep.md'} (+ sweep.csv, sweep.json)")
    return 0
