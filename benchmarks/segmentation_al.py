"""Evidence for issue 11: active-learning curves (QBC vs random selection vs a U-Net without
AL) for hand segmentation, on synthetic radiographs with the oracle and on the real
rsna-fullres masks (``boneage annotate background-masks``).

Each curve is an :class:`~boneage.segmentation.active.ActiveLearning` run answered by a
:class:`~boneage.segmentation.active.MaskOracle`: ``--initial`` images, then ``--k`` per round
for ``--rounds`` rounds (no early stop, so every curve has the same label counts). The runs'
validation Dice is what the loop monitors; every round's committee is also scored on a held-back
test set that no run sees, and that is the number reported.

    python benchmarks/segmentation_al.py --out runs/segmentation/al            # synthetic
    python benchmarks/segmentation_al.py --out runs/segmentation/al-real --real ../shared/data/rsna-fullres \
        --real-masks runs/segmentation/fullres-masks
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def _write(folder: Path, images, masks, ages, sexes):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = ["id,boneage,male"]
    for i, (im, m, a, s) in enumerate(zip(images, masks, ages, sexes), start=1):
        cv2.imwrite(str(folder / "images" / f"{i}.png"), np.round(np.clip(im, 0, 1) * 255).astype(np.uint8))
        cv2.imwrite(str(folder / "masks" / f"{i}.png"), (m > 0).astype(np.uint8) * 255)
        rows.append(f"{i},{a:.1f},{s == 'M'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def synthetic_data(root: Path, n: int, size: int, seed: int) -> Path:
    from boneage.data.synthetic import sample_radiographs

    ss = sample_radiographs(n, size=size, seed=seed, nuisance=True)
    _write(root, [s.image for s in ss], [s.mask for s in ss], [s.age_months for s in ss], [s.sex for s in ss])
    return root


def real_data(root: Path, data: Path, masks: Path, side: int) -> Path:
    """The real films shrunk to ``side`` px on their longer side (copies under the run folder)."""
    from boneage.data.labels import load_samples
    from boneage.io.image import read_image
    from boneage.transforms.functional import resize

    ims, ms, ages, sexes = [], [], [], []
    for s in load_samples(data):
        im = read_image(s.path).pixels
        h, w = im.shape
        shape = (side, int(round(side * w / h))) if h >= w else (int(round(side * h / w)), side)
        ims.append(resize(im, shape))
        m = cv2.imread(str(masks / f"{s.id}.png"), 0).astype(np.float32) / 255.0
        ms.append(resize(m, shape) > 0.5)
        ages.append(s.boneage); sexes.append(s.sex.value)
    _write(root, ims, ms, ages, sexes)
    return root


def test_dice(run, test_samples, test_masks):
    from boneage.io.image import read_image
    from boneage.models.segmenter import mask_from_probability, probability_maps
    from boneage.models.unet import dice_score

    images = [read_image(s.path).pixels for s in test_samples]
    out = []
    for h in run.history:
        members = run.committee(round=h["round"])
        per = [float(np.mean([dice_score(mask_from_probability(p, t.shape), t)
                              for p, t in zip(probability_maps(m, images), test_masks)])) for m in members]
        out.append(float(np.mean(per)))
    return out


def main() -> None:
    from boneage.config import load_recipe
    from boneage.data.labels import load_samples
    from boneage.segmentation.active import ActiveLearning, MaskOracle
    from boneage.segmentation.task import read_mask

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--real", help="a background-removed data folder (rsna-fullres)")
    ap.add_argument("--real-masks", help="its masks (boneage annotate background-masks)")
    ap.add_argument("--pool", type=int, default=96)
    ap.add_argument("--val", type=int, default=24)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--initial", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = out / "data"
    if not (data / "labels.csv").is_file():
        shutil.rmtree(data, ignore_errors=True)
        if args.real:
            real_data(data, Path(args.real), Path(args.real_masks), 256)
        else:
            synthetic_data(data, args.pool + args.val + args.test, 96, 100 + args.seed)
    samples = load_samples(data)
    order = np.random.default_rng(args.seed).permutation(len(samples))
    n_val, n_test = args.val, args.test
    test = [samples[i] for i in order[:n_test]]
    val = [samples[i] for i in order[n_test:n_test + n_val]]
    pool = [samples[i] for i in order[n_test + n_val:]]
    test_masks = [read_mask(data / "masks" / f"{s.id}.png") for s in test]
    # QBC needs a committee (the paper's 3); random selection needs none, so its curves train one
    # network (seed 0, the QBC committee's first member's seed) to fit the CPU budget; the
    # Dice of a curve is its members' mean.
    runs = {"qbc-fc_densenet": ("configs/seg-fc-densenet.yaml", "qbc", 3),
            "random-fc_densenet": ("configs/seg-fc-densenet.yaml", "random", 1),
            "random-unet": ("configs/seg-unet.yaml", "random", 1)}
    results = {"pool": len(pool), "val": len(val), "test": len(test), "initial": args.initial, "k": args.k,
               "rounds": args.rounds, "epochs": args.epochs, "seed": args.seed, "curves": {}}
    for name, (config, strategy, committee) in runs.items():
        t0 = time.process_time()
        recipe = load_recipe(config, [f"train.epochs={args.epochs}", "train.device=cpu"])
        folder = out / name
        run = (ActiveLearning.open(folder) if (folder / "state.json").is_file() else
               ActiveLearning.create(folder, recipe, pool, val, data / "masks", initial=args.initial, k=args.k,
                                     committee=committee, strategy=strategy, seed=args.seed,
                                     patience=args.rounds, max_rounds=args.rounds))
        run.run(MaskOracle(data / "masks"))
        results["curves"][name] = {"n_labelled": [h["n_labelled"] for h in run.history],
                                   "val_dice": [round(h["val_dice"], 4) for h in run.history],
                                   "test_dice": [round(d, 4) for d in test_dice(run, test, test_masks)],
                                   "cpu_seconds": round(time.process_time() - t0, 1)}
        print(name, results["curves"][name], flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
