"""``boneage annotate``: the active-learning annotation loop for hand segmentation.

:func:`add_arguments` fills its parser, :func:`run` runs the step given
(:mod:`boneage.cli.main` dispatches to both)::

    boneage annotate init RUN --recipe configs/seg-fc-densenet.yaml --pool DIR --val DIR --val-masks DIR
    boneage annotate export RUN OUT        # the images to annotate + proposed masks + manifest
    boneage annotate import RUN OUT        # the corrected masks back (every file checked)
    boneage annotate round RUN             # train the committee, score the pool, select the next k
    boneage annotate status RUN
    boneage annotate background-masks DATA OUT   # masks of background-removed films (rsna-fullres)
    boneage annotate figure DATA OUT.png --masks DIR --segmenter FILE   # films with mask outlines

The work is :mod:`boneage.segmentation.active` and :mod:`boneage.segmentation.annotate`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from boneage.config import load_recipe
from boneage.data.labels import load_samples
from boneage.errors import InputError
from boneage.evaluation.plots import plot_mask_outlines
from boneage.io.image import read_image
from boneage.segmentation.active import ActiveLearning
from boneage.segmentation.annotate import export_round, import_round
from boneage.segmentation.background import mask_from_removed_background
from boneage.inference.torch_model import load_segmenter
from boneage.models.segmenter import segment
from boneage.segmentation.task import read_mask
from boneage.models.unet import dice_score


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the steps of ``annotate`` (its subcommands) and their arguments to its parser ``s``."""
    sub = s.add_subparsers(dest="annotate_command", required=True, metavar="STEP")

    a = sub.add_parser("init", help="start an active-learning run in a folder")
    a.add_argument("run", metavar="RUN")
    a.add_argument("--recipe", required=True, help="a segmentation recipe (task: segmentation)")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    a.add_argument("--pool", required=True, help="unlabelled images: a folder with labels.csv + images/")
    a.add_argument("--val", required=True, help="validation images: a folder with labels.csv + images/")
    a.add_argument("--val-masks", required=True, help="folder of <id>.png masks of the validation images")
    a.add_argument("--initial", type=int, default=8, help="images annotated before the first round (default 8)")
    a.add_argument("--k", type=int, default=8, help="images selected per round (default 8)")
    a.add_argument("--committee", type=int, default=3, help="committee size (default 3, the paper's)")
    a.add_argument("--strategy", default="qbc", help="qbc (default) or random")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--patience", type=int, default=1, help="rounds without a validation-Dice gain before stopping")
    a.add_argument("--max-rounds", type=int, default=None)

    a = sub.add_parser("export", help="write the images awaiting annotation, their proposed masks and a manifest")
    a.add_argument("run", metavar="RUN")
    a.add_argument("out", metavar="OUT")

    a = sub.add_parser("import", help="read corrected masks back into the run (size, values and ids checked)")
    a.add_argument("run", metavar="RUN")
    a.add_argument("folder", metavar="EXPORT")

    a = sub.add_parser("round", help="train the committee on the labelled images and select the next images")
    a.add_argument("run", metavar="RUN")

    a = sub.add_parser("status", help="phase, labelled count and the validation-Dice curve of a run")
    a.add_argument("run", metavar="RUN")

    a = sub.add_parser("background-masks", help="hand masks of background-removed radiographs (threshold + cleanup)")
    a.add_argument("data", metavar="DATA", help="folder with labels.csv + images/ (e.g. ../shared/data/rsna-fullres)")
    a.add_argument("out", metavar="OUT", help="folder for <id>.png masks (under runs/, never the repository)")
    a.add_argument("--close-fraction", type=float, default=0.005,
                   help="closing kernel side as a fraction of the longer image side (default 0.005)")

    a = sub.add_parser("figure", help="radiographs with the outlines of their masks (reference and/or a "
                                      "segmenter's), and the Dice between them")
    a.add_argument("data", metavar="DATA", help="folder with labels.csv + images/")
    a.add_argument("out", metavar="OUT", help="PNG to write (under runs/ for real radiographs)")
    a.add_argument("--masks", help="folder of <id>.png reference masks")
    a.add_argument("--segmenter", help="a segmentation model file whose masks are drawn too")
    a.add_argument("--ids", nargs="+", help="these ids (default: the first --limit of labels.csv)")
    a.add_argument("--limit", type=int, default=4, help="images drawn without --ids (default 4)")


def _init(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    loop = ActiveLearning.create(args.run, recipe, load_samples(args.pool), load_samples(args.val), args.val_masks,
                                 initial=args.initial, k=args.k, committee=args.committee, strategy=args.strategy,
                                 seed=args.seed, patience=args.patience, max_rounds=args.max_rounds)
    print(f"started {args.run}: {len(loop.pending)} images await annotation "
          f"(boneage annotate export {args.run} OUT)")
    return 0


def _export(args: argparse.Namespace) -> int:
    out = export_round(ActiveLearning.open(args.run), args.out)
    print(f"wrote images, proposed masks and manifest.json to {out}; correct masks/*.png and run "
          f"boneage annotate import {args.run} {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    loop = ActiveLearning.open(args.run)
    ids = import_round(loop, args.folder)
    print(f"added {len(ids)} masks; {len(loop.state['labelled'])} labelled (boneage annotate round {args.run})")
    return 0


def _round(args: argparse.Namespace) -> int:
    loop = ActiveLearning.open(args.run)
    res = loop.train_round()
    line = f"round {res.round}: {res.n_labelled} labelled, validation Dice {res.val_dice:.4f}; "
    print(line + (f"{len(res.selected)} images selected (boneage annotate export {args.run} OUT)"
                  if res.selected else f"stopped: {loop.history[-1].get('stopped')}"))
    return 0


def _status(args: argparse.Namespace) -> int:
    loop = ActiveLearning.open(args.run)
    print(json.dumps({"phase": loop.phase, "round": loop.state["round"], "labelled": len(loop.state["labelled"]),
                      "pending": loop.pending, "curve": [{k: h[k] for k in ("round", "n_labelled", "val_dice")}
                                                         for h in loop.history]}, indent=1))
    return 0


def _background_masks(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data)
    fractions = []
    for s in samples:
        mask = mask_from_removed_background(read_image(s.path).pixels, close_fraction=args.close_fraction)
        fractions.append(float(mask.mean()))
        cv2.imwrite(str(out / f"{s.id}.png"), mask * np.uint8(255))
    print(f"wrote {len(samples)} masks to {out}; hand fraction of the image {min(fractions):.3f}-"
          f"{max(fractions):.3f} (median {np.median(fractions):.3f})")
    return 0


def _figure(args: argparse.Namespace) -> int:
    if not args.masks and not args.segmenter:
        raise InputError("give --masks, --segmenter or both: there is nothing to outline")
    if args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    samples = load_samples(args.data)
    if args.ids:
        by_id = {str(s.id): s for s in samples}
        unknown = [i for i in args.ids if i not in by_id]
        if unknown:
            raise InputError(f"ids not in {args.data}: {', '.join(unknown)}")
        samples = [by_id[i] for i in args.ids]
    else:
        samples = samples[:args.limit]
    images = [read_image(s.path).pixels for s in samples]
    masks: dict[str, list] = {}
    if args.masks:
        masks["reference"] = [read_mask(Path(args.masks) / f"{s.id}.png") for s in samples]
    if args.segmenter:
        net, _ = load_segmenter(args.segmenter)
        masks["segmenter"] = [segment(net, im) for im in images]
    titles = [str(s.id) for s in samples]
    if len(masks) == 2:
        dice = [dice_score(p, t) for p, t in zip(masks["segmenter"], masks["reference"])]
        titles = [f"{t}  Dice {d:.3f}" for t, d in zip(titles, dice)]
        print(f"Dice, segmenter vs reference: mean {np.mean(dice):.3f}, min {np.min(dice):.3f} "
              f"({len(dice)} images)")
    path = plot_mask_outlines(images, masks, args.out, titles=titles)
    print(f"wrote {path}")
    return 0


#: The function of each step, by the name ``annotate`` is given.
_STEPS = {"init": _init, "export": _export, "import": _import, "round": _round, "status": _status,
          "background-masks": _background_masks, "figure": _figure}


def run(args: argparse.Namespace) -> int:
    """Run the step of ``annotate`` that the command line names; its exit status."""
    return _STEPS[args.annotate_command](args)
