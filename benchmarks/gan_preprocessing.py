"""Evidence for issue 12: CLAHE vs GAN vs no enhancement before the bone-age model.

The three models of ``configs/gan-boneage-{none,clahe,gan}-rsna100.yaml`` differ only in
their preprocessing step. Each chose its best epoch on its own validation split of the first
``--train-rows`` labelled images; this script measures them on later rows that no model (and
not the enhancement generator) saw: as stored, and degraded once per image by the
generator recipe's ``gan.degrade`` steps (fixed seed), the acquisition variation the
generator was trained to undo. It prints MAE (all, male, female) per model and condition and
the paired difference to the first model with a bootstrap 95 % interval over images.

    python benchmarks/gan_preprocessing.py --data ../shared/data/rsna-100px --rows 3400:4400 \
        --models runs/gan/boneage-none/model.safetensors runs/gan/boneage-clahe/model.safetensors \
                 runs/gan/boneage-gan/model.safetensors --out runs/gan/test
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np


def _test_folders(data: Path, rows: slice, out: Path, degrade_recipe: Path, seed: int) -> dict[str, Path]:
    """``out/stored`` and ``out/degraded``: labels.csv + images/ of the test rows."""
    from boneage.config import load_recipe
    from boneage.io import read_image
    from boneage.transforms import build_pipeline

    with open(data / "labels.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        chosen = list(reader)[rows]
    gan = load_recipe(degrade_recipe).gan
    degrade = build_pipeline(gan.degrade)
    folders = {}
    for name in ("stored", "degraded"):
        folder = out / name
        (folder / "images").mkdir(parents=True, exist_ok=True)
        for k, row in enumerate(chosen):
            image = read_image(data / "images" / f"{row[0]}.png").pixels
            if name == "degraded":
                image = degrade(image, np.random.default_rng([seed, k]))
            ok, buf = cv2.imencode(".png", np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
            assert ok
            (folder / "images" / f"{row[0]}.png").write_bytes(buf.tobytes())
        with open(folder / "labels.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(chosen)
        folders[name] = folder
    return folders


def _predict(model: Path, folder: Path):
    from boneage.api import load_predictor
    from boneage.data.datasets import PreprocessedCache
    from boneage.data.labels import load_samples
    from boneage.inference.batch import predict_cached

    predictor = load_predictor(model)
    samples = load_samples(folder)
    cache = PreprocessedCache(samples, predictor.recipe)
    preds, _ = predict_cached(predictor.model, predictor.recipe, cache, range(len(samples)), predictor.device)
    return np.asarray(preds), np.array([s.boneage for s in samples]), np.array([s.male for s in samples])


def _ci(diff: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/rsna-100px"))
    ap.add_argument("--rows", default="3400:4400", help="test rows of labels.csv, START:STOP")
    ap.add_argument("--models", nargs="+", type=Path, required=True)
    ap.add_argument("--degrade-recipe", type=Path, default=Path("configs/gan-enhancer-rsna100.yaml"))
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("runs/gan/test"))
    args = ap.parse_args(argv)
    start, stop = (int(v) for v in args.rows.split(":"))
    folders = _test_folders(args.data, slice(start, stop), args.out, args.degrade_recipe, args.seed)
    rows = []
    for condition, folder in folders.items():
        first = None
        for model in args.models:
            pred, true, male = _predict(model, folder)
            err = np.abs(pred - true)
            row = {"condition": condition, "model": model.parent.name, "n": len(err), "mae": float(err.mean()),
                   "mae_male": float(err[male].mean()), "mae_female": float(err[~male].mean())}
            if first is None:
                first = err
            else:
                lo, hi = _ci(err - first)
                row.update(diff_to_first=float((err - first).mean()), ci95=[lo, hi])
            rows.append(row)
            print(json.dumps(row))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
