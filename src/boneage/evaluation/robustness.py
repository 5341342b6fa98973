"""Does a model give the same bone age however a radiograph was prepared?

A *preparation* is one way the same radiograph may reach the model: resampled by another
method, blurred or sharpened by a console, compressed, stored at another bit depth, read from
a DICOM of the same pixels, framed, marked, rotated or mirrored. :func:`run_robustness`
predicts every image of a labelled set as stored and under each preparation and reports, per
preparation, the MAE, the mean signed error and how far the estimates moved from the
as-stored ones. :func:`paired_consistency` compares two real preparations of the same
radiographs (e.g. the raw RSNA files and their 100-px copies), matched by id.

Preparations are deterministic: those that draw something (noise) seed it from the image's
position in the set, so a report is reproducible.
"""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from boneage.errors import InputError
from boneage.evaluation.plots import plot_robustness
from boneage.fileutils import atomic_path
from boneage.io import read_image
from boneage.io.dicom import write_dicom
from boneage.io.image import read_image_bytes
from boneage.registry import Registry
from boneage.transforms import functional as F

#: Mean shifts larger than this (months) are flagged: issue 8's bound for "the same bone age".
SHIFT_LIMIT = 3.0


@dataclass(frozen=True)
class PrepContext:
    """What a preparation may need besides the image."""

    grid: int                     # side of the model's working grid (e.g. 100 px)
    rng: np.random.Generator      # seeded per image
    workdir: Path                 # scratch folder for file round trips


@dataclass(frozen=True)
class Preparation:
    name: str
    description: str
    apply: Callable[[np.ndarray, PrepContext], np.ndarray]


PREPARATIONS: Registry = Registry("preparation")


def _register(name: str, description: str):
    def deco(fn):
        PREPARATIONS.add(name, Preparation(name, description, fn))
        return fn
    return deco


def _scale(image: np.ndarray, ctx: PrepContext) -> float:
    """Source pixels per grid pixel (about 1 for images already at the grid's size)."""
    return max(1.0, max(image.shape) / ctx.grid)


def _to_grid(image: np.ndarray, ctx: PrepContext, method: str) -> np.ndarray:
    """Shrink to the grid with ``method``; an image not larger than the grid is first enlarged
    4x (cubic), so the method still shrinks a larger source as it would have in a real pipeline."""
    if max(image.shape) <= 1.5 * ctx.grid:
        image = F.resample(image, (image.shape[0] * 4, image.shape[1] * 4), "cubic")
    return F.resample(image, ctx.grid, method)


@_register("as_stored", "the file as it is")
def _as_stored(image, ctx):
    return image


for _method in ("nearest", "area", "linear", "cubic"):
    _register(f"shrink_{_method}", f"shrunk to the {{grid}}-px grid by {_method} resampling")(
        lambda image, ctx, m=_method: _to_grid(image, ctx, m))


@_register("enlarge_nearest", "enlarged 2.5x (linear), then shrunk to the grid by nearest neighbour")
def _enlarge_nearest(image, ctx):
    big = F.resample(image, (int(image.shape[0] * 2.5), int(image.shape[1] * 2.5)), "linear")
    return F.resample(big, ctx.grid, "nearest")


@_register("enlarge_shrink", "enlarged 2x (cubic) and shrunk back to its size (area)")
def _enlarge_shrink(image, ctx):
    return F.rescale_roundtrip(image, 2.0, "cubic", "area")


@_register("blur", "Gaussian blur, sigma 1 grid pixel")
def _blur(image, ctx):
    return F.gaussian_blur(image, 1.0 * _scale(image, ctx))


@_register("sharpen", "unsharp mask, amount 1, sigma 1 grid pixel")
def _sharpen(image, ctx):
    return F.sharpen(image, 1.0, 1.0 * _scale(image, ctx))


@_register("noise", "Gaussian noise per stored pixel, std 2 % of the image's 1-99th percentile range")
def _noise(image, ctx):
    return F.add_noise(image, 0.02, ctx.rng, relative=True)


@_register("noise_absolute", "Gaussian noise per stored pixel, std 0.02 (5 grey levels) whatever the contrast")
def _noise_absolute(image, ctx):
    return F.add_noise(image, 0.02, ctx.rng)


# Preparations that are one call with fixed values: (name, description, function of the image).
_FIXED = [
    ("jpeg_q50", "JPEG round trip, quality 50", lambda im: F.jpeg_compress(im, 50)),
    ("jpeg_q20", "JPEG round trip, quality 20", lambda im: F.jpeg_compress(im, 20)),
    ("quantize_6bit", "64 grey levels", lambda im: F.quantize(im, 6)),
    ("gamma_0.7", "gamma 0.7 (brighter soft tissue)", lambda im: F.adjust_gamma(im, 0.7)),
    ("gamma_1.4", "gamma 1.4 (darker soft tissue)", lambda im: F.adjust_gamma(im, 1.4)),
    ("window_wide", "wide window [-0.15, 1.15]: low contrast, as a raw 12/16-bit source",
     lambda im: F.window(im, -0.15, 1.15)),
    ("window_narrow", "narrow window [0.1, 0.9]: high contrast", lambda im: F.window(im, 0.1, 0.9)),
]
for _name, _description, _fn in _FIXED:
    _register(_name, _description)(lambda image, ctx, fn=_fn: fn(image))


@_register("png_16bit", "written as a 16-bit PNG and read back")
def _png16(image, ctx):
    ok, buf = cv2.imencode(".png", np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return read_image_bytes(buf.tobytes(), "png_16bit").pixels


def _dicom_roundtrip(image, ctx, **kwargs):
    path = ctx.workdir / "roundtrip.dcm"
    write_dicom(path, np.clip(image, 0.0, 1.0), overwrite=True, **kwargs)
    return read_image(path).pixels


@_register("dicom_12bit", "written as a 12-bit MONOCHROME2 DICOM and read back")
def _dicom12(image, ctx):
    return _dicom_roundtrip(image, ctx, bits_stored=12)


@_register("dicom_16bit_monochrome1", "written as a 16-bit MONOCHROME1 (inverted) DICOM and read back")
def _dicom16_mono1(image, ctx):
    return _dicom_roundtrip(image, ctx, bits_stored=16, photometric="MONOCHROME1")


@_register("border_black", "black frame, 4 % of each side")
def _border_black(image, ctx):
    return F.add_border(image, 0.04, 0.0)


@_register("border_white", "white frame, 4 % of each side")
def _border_white(image, ctx):
    return F.add_border(image, 0.04, 1.0)


@_register("pad_square", "padded with black to a square")
def _pad_square(image, ctx):
    return F.pad_to_square(image, 0.0)


@_register("marker", "a bright 'L' burned into the top-left corner (8 % of the height)")
def _marker(image, ctx):
    return F.burn_marker(image, "L", "top_left", 0.08, 1.0)


# The hand turned on the detector: the edges continue into the corners (no black wedges).
@_register("rotate_+10", "rotated 10 degrees counter-clockwise, edges continued into the corners")
def _rotate_pos(image, ctx):
    return F.rotate(image, 10.0, border="replicate")


@_register("rotate_-10", "rotated 10 degrees clockwise, edges continued into the corners")
def _rotate_neg(image, ctx):
    return F.rotate(image, -10.0, border="replicate")


@_register("hflip", "mirrored left-right")
def _hflip(image, ctx):
    return F.hflip(image)


def resolve_preparations(names: Sequence[str] | None) -> list[Preparation]:
    """The named preparations (all of them for None), ``as_stored`` always first."""
    if names is None:
        return list(PREPARATIONS.values())
    chosen = ["as_stored"] + [n for n in names if n != "as_stored"]
    return [PREPARATIONS.get(n) for n in dict.fromkeys(chosen)]


def model_grid(recipe) -> int:
    """The working grid of a recipe: the size of its first resize step (else 100, rsna-100px)."""
    for step in recipe.preprocess:
        if isinstance(step, dict) and step.get("name") in ("resize", "lowpass_resize", "resample"):
            size = step.get("size")
            return int(size if isinstance(size, (int, float)) else min(size))
    return 100


def run_robustness(predictor, samples, preparations: Sequence[Preparation] | None = None,
                   *, grid: int | None = None, chunk: int = 32, progress: bool = False) -> dict:
    """Predict every labelled sample as stored and under each preparation.

    Returns a dict with ``rows`` (one per preparation: ``n``, ``mae``, ``mean_error``,
    ``mean_shift`` and its 95 % interval ``shift_ci95`` against the as-stored estimates,
    ``mean_abs_shift``, ``max_abs_shift``, ``flagged`` when ``|mean_shift|`` exceeds
    :data:`SHIFT_LIMIT`) and ``predictions`` (id → {preparation: months}).
    """
    samples = list(samples)
    if not samples:
        raise InputError("no labelled images to assess")
    missing = [s.id for s in samples if s.boneage is None]
    if missing:
        raise InputError(f"robustness needs bone-age labels; {len(missing)} image(s) have none "
                         f"(first: {missing[0]})")
    preps = list(preparations) if preparations is not None else resolve_preparations(None)
    if not preps or preps[0].name != "as_stored":
        preps = resolve_preparations([p.name for p in preps])
    grid = grid or model_grid(predictor.recipe)
    preds = np.zeros((len(preps), len(samples)), dtype=np.float64)
    starts = range(0, len(samples), chunk)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="robustness", unit="chunk", leave=False, disable=None)
    with tempfile.TemporaryDirectory(prefix="boneage-robustness-") as tmp:
        for start in starts:
            part = samples[start:start + chunk]
            images = [read_image(s.path).pixels for s in part]
            sexes = [s.sex for s in part]
            for p, prep in enumerate(preps):
                prepared = [prep.apply(im, PrepContext(grid, np.random.default_rng([start + i, p]), Path(tmp)))
                            for i, im in enumerate(images)]
                results = predictor.predict_batch(prepared, sexes)
                preds[p, start:start + len(part)] = [r.bone_age_months for r in results]
    true = np.array([s.boneage for s in samples], dtype=np.float64)
    base = preds[0]
    rows = []
    for p, prep in enumerate(preps):
        shift = preds[p] - base
        half = 1.96 * float(shift.std(ddof=1)) / np.sqrt(len(shift)) if len(shift) > 1 else 0.0
        mean_shift = float(shift.mean())
        rows.append({
            "preparation": prep.name,
            "description": prep.description.replace("{grid}", str(grid)),
            "n": len(samples),
            "mae": float(np.mean(np.abs(preds[p] - true))),
            "mean_error": float(np.mean(preds[p] - true)),
            "mean_shift": mean_shift,
            "shift_ci95": [mean_shift - half, mean_shift + half],
            "mean_abs_shift": float(np.mean(np.abs(shift))),
            "max_abs_shift": float(np.max(np.abs(shift))),
            "flagged": bool(abs(mean_shift) > SHIFT_LIMIT),
        })
    predictions = {s.id: {prep.name: float(preds[p, i]) for p, prep in enumerate(preps)}
                   for i, s in enumerate(samples)}
    return {"grid": grid, "rows": rows, "predictions": predictions}


def paired_consistency(predictor, samples, paired_samples) -> dict:
    """Estimates for two stored preparations of the same radiographs, matched by id.

    ``difference = estimate(samples) - estimate(paired_samples)`` per id; returns ``n``,
    ``mean_difference`` (with its 95 % interval ``difference_ci95``), ``mean_abs_difference``, ``max_abs_difference`` and ``rows``.
    """
    other = {s.id: s for s in paired_samples}
    both = [s for s in samples if s.id in other]
    if not both:
        raise InputError("the paired folder shares no image id with the data folder")
    rows = []
    for s in both:
        a, b = predictor.predict_batch([read_image(s.path).pixels, read_image(other[s.id].path).pixels],
                                       [s.sex, s.sex])
        rows.append({"id": s.id, "boneage": s.boneage, "estimate": a.bone_age_months,
                     "paired_estimate": b.bone_age_months,
                     "difference": a.bone_age_months - b.bone_age_months})
    diff = np.array([r["difference"] for r in rows])
    half = 1.96 * float(diff.std(ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return {"n": len(rows), "mean_difference": float(diff.mean()),
            "difference_ci95": [float(diff.mean()) - half, float(diff.mean()) + half],
            "mean_abs_difference": float(np.abs(diff).mean()),
            "max_abs_difference": float(np.abs(diff).max()), "rows": rows}


def format_robustness(result: dict, pairs: dict | None = None) -> str:
    """A Markdown table of a :func:`run_robustness` result (plus the paired comparison)."""
    lines = [f"| preparation | MAE | mean error | mean shift (95 % CI) | mean abs shift | max abs shift |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lo, hi = r["shift_ci95"]
        flag = " **!**" if r["flagged"] else ""
        lines.append(f"| {r['preparation']} | {r['mae']:.2f} | {r['mean_error']:+.2f} | "
                     f"{r['mean_shift']:+.2f} ({lo:+.2f} to {hi:+.2f}){flag} | "
                     f"{r['mean_abs_shift']:.2f} | {r['max_abs_shift']:.2f} |")
    n = result["rows"][0]["n"] if result["rows"] else 0
    text = "\n".join(lines) + (f"\n\nn = {n} images; shifts are against the as-stored estimates; "
                               f"**!** marks a mean shift beyond ±{SHIFT_LIMIT:g} months.")
    if pairs:
        text += (f"\n\nPaired preparations ({pairs['n']} radiographs): mean difference "
                 f"{pairs['mean_difference']:+.2f} months, mean absolute difference "
                 f"{pairs['mean_abs_difference']:.2f}, largest {pairs['max_abs_difference']:.2f}.")
    return text


def write_robustness_report(result: dict, out_dir: str | Path, pairs: dict | None = None,
                            title: str = "") -> Path:
    """Write ``robustness.md``, ``robustness.csv``, ``robustness.json``,
    ``robustness_predictions.csv`` (and ``paired.csv``) and the plot ``robustness.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "robustness.md") as tmp:
        Path(tmp).write_text((f"# {title}\n\n" if title else "") + format_robustness(result, pairs) + "\n")
    with atomic_path(out / "robustness.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["preparation", "n", "mae", "mean_error", "mean_shift", "shift_ci95_low",
                    "shift_ci95_high", "mean_abs_shift", "max_abs_shift", "flagged", "description"])
        for r in result["rows"]:
            w.writerow([r["preparation"], r["n"], f"{r['mae']:.3f}", f"{r['mean_error']:.3f}",
                        f"{r['mean_shift']:.3f}", f"{r['shift_ci95'][0]:.3f}", f"{r['shift_ci95'][1]:.3f}",
                        f"{r['mean_abs_shift']:.3f}", f"{r['max_abs_shift']:.3f}", r["flagged"], r["description"]])
    names = [r["preparation"] for r in result["rows"]]
    with atomic_path(out / "robustness_predictions.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *names])
        for image_id, by_prep in result["predictions"].items():
            w.writerow([image_id, *(f"{by_prep[n]:.2f}" for n in names)])
    summary = {"grid": result["grid"], "rows": result["rows"]}
    if pairs:
        summary["pairs"] = pairs
        with atomic_path(out / "paired.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(pairs["rows"][0]))
            w.writeheader()
            w.writerows(pairs["rows"])
    with atomic_path(out / "robustness.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2))
    plot_robustness(result["rows"], out / "robustness.png", limit=SHIFT_LIMIT, pairs=pairs, title=title)
    return out
