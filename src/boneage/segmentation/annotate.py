"""Annotation as files a person edits: export the selected images with proposed masks, import
the corrections (``boneage annotate export|import``).

An export folder holds ``images/<id>.png`` (the radiograph, 8-bit), ``masks/<id>.png`` (the
committee's proposed hand mask: 255 hand, 0 background, the image's size) and
``manifest.json`` (ids, sizes, the run and round they belong to). The person corrects the masks
in any image editor, saving them under the same names as black/white PNGs, and imports the
folder. Import checks every file before anything is stored, and names the first bad one: a
missing mask, a file whose id the manifest does not list, a wrong size, values other than
black and white, an empty mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from boneage.errors import InputError
from boneage.fileutils import atomic_path
from boneage.io.image import read_image

__all__ = ["MANIFEST", "export_annotations", "read_annotations", "export_round", "import_round"]

MANIFEST = "manifest.json"
FORMAT = "boneage-annotation/1"


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())


def export_annotations(out: str | Path, images: Mapping[str, np.ndarray], proposals: Mapping[str, np.ndarray],
                       info: dict | None = None) -> Path:
    """Write images (2-D, [0, 1]) and proposed masks (0/1, same shapes) by id, and the manifest.

    Raises:
        InputError: the folder already holds a manifest, or an id lacks a proposal of its image's size.
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        raise InputError("folder already holds an annotation export; choose another", out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    items = []
    for i, image in images.items():
        mask = proposals.get(i)
        if mask is None or np.shape(mask) != np.shape(image):
            raise InputError(f"no proposed mask of the image's size for id {i!r}")
        _write_png(out / "images" / f"{i}.png", np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        _write_png(out / "masks" / f"{i}.png", (np.asarray(mask) > 0).astype(np.uint8) * 255)
        items.append({"id": i, "image": f"images/{i}.png", "mask": f"masks/{i}.png",
                      "height": int(image.shape[0]), "width": int(image.shape[1])})
    manifest = {"format": FORMAT, **(info or {}), "items": items,
                "instructions": "Correct each masks/<id>.png (white = hand, black = background, same size, "
                                "PNG) and run `boneage annotate import`."}
    with atomic_path(out / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1))
    return out


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an export folder; a missing or foreign one is an InputError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError("no manifest.json: not an annotation export folder", folder)
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"broken manifest ({exc})", path) from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("items"), list):
        raise InputError(f"not an annotation manifest (expected format {FORMAT!r})", path)
    return manifest


def _read_binary(path: Path, height: int, width: int) -> np.ndarray:
    if not path.is_file():
        raise InputError("mask file missing", path)
    arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError("not a readable image (save the mask as PNG)", path)
    if arr.ndim == 3:
        # An editor may save gray as RGB(A); equal channels are still a gray mask.
        colour = arr[..., :3]
        if not (colour == colour[..., :1]).all():
            raise InputError("mask has colours; use black (background) and white (hand) only", path)
        arr = colour[..., 0]
    if arr.shape != (height, width):
        raise InputError(f"mask is {arr.shape[1]}x{arr.shape[0]} (width x height) but its image is "
                         f"{width}x{height}", path)
    top = 65535 if arr.dtype == np.uint16 else 255
    values = set(np.unique(arr).tolist())
    if not (values <= {0, top} or values <= {0, 1}):
        bad = sorted(values - {0, 1, top})[0]
        raise InputError(f"mask is not binary: {len(values)} grey levels (e.g. {bad}); use 0 and {top} only "
                         "(turn off anti-aliasing / feathering in the editor)", path)
    mask = (arr > 0).astype(np.uint8)
    if not mask.any():
        raise InputError("mask is empty (no hand pixel)", path)
    return mask


def read_annotations(folder: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(manifest, masks by id)`` of a corrected export folder, every file checked."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed = {item["id"] for item in manifest["items"]}
    mask_dir = folder / "masks"
    if mask_dir.is_dir():
        for f in sorted(mask_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.stem not in listed:
                raise InputError(f"unknown id {f.stem!r}: the manifest does not list it", f)
    masks = {item["id"]: _read_binary(folder / item["mask"], int(item["height"]), int(item["width"]))
             for item in manifest["items"]}
    return manifest, masks


def export_round(run, out: str | Path) -> Path:
    """Export the pending images of an :class:`~boneage.segmentation.active.ActiveLearning`
    run with the committee's proposals."""
    if run.phase != "annotate":
        raise InputError(f"nothing to annotate: the run is in phase {run.phase!r}", run.folder)
    ids = run.pending
    images = {s.id: read_image(s.path).pixels for s in run.samples(ids)}
    info = {"run": str(Path(run.folder).resolve()), "round": run.state["round"],
            "proposed_by": "committee" if run.state["history"] else "threshold (no committee yet)"}
    return export_annotations(out, images, run.proposals(ids), info)


def import_round(run, folder: str | Path) -> list[str]:
    """Add a corrected export folder's masks to the run; returns the ids added."""
    manifest, masks = read_annotations(folder)
    if manifest.get("run") and Path(manifest["run"]) != Path(run.folder).resolve():
        raise InputError(f"this export belongs to the run in {manifest['run']}", folder)
    if manifest.get("round") is not None and manifest["round"] != run.state["round"]:
        raise InputError(f"this export is of round {manifest['round']}; the run awaits round {run.state['round']}",
                         folder)
    run.add_masks(masks)
    return list(masks)
