"""``boneage explain``: a heat map (Grad-CAM or CAM) of what raises a radiograph's predicted
bone age (the work is :func:`boneage.api.explain`).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage import api
from boneage.cli.common import refuse_overwrite
from boneage.errors import InputError
from boneage.sex import Sex


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``explain`` to its parser ``s``."""
    s.add_argument("image", metavar="IMAGE")
    s.add_argument("--method", choices=["gradcam", "cam"], default="gradcam",
                   help="gradcam (default) or cam: exact class activation maps from the last "
                        "feature map and the head's weights (docs/boneagenet.md)")
    s.add_argument("--sex", help="M or F (default: the DICOM PatientSex tag)")
    s.add_argument("--model", help="model file (default: the bundled model)")
    s.add_argument("--out", required=True, metavar="FILE.png", help="where to write the overlay PNG")
    s.add_argument("--force", action="store_true", help="overwrite FILE.png if it exists")


def run(args: argparse.Namespace) -> int:
    """Predict the radiograph and write the heat map over it as a PNG; 0."""
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
