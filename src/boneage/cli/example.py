"""``boneage example``: write a synthetic hand radiograph to try the tool on.

One of the commands of the light install (no PyTorch). :func:`add_arguments` fills its
parser, :func:`run` runs it (:mod:`boneage.cli.main` dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.cli.common import positive_int, refuse_overwrite
from boneage.data.synthetic import write_example_radiograph
from boneage.errors import InputError
from boneage.sex import Sex


def add_arguments(s: argparse.ArgumentParser) -> None:
    """Add the arguments of ``example`` to its parser ``s``."""
    s.add_argument("output", metavar="OUT.png")
    s.add_argument("--age", type=float, default=120.0, help="bone age to draw, months (default 120)")
    s.add_argument("--sex", default="M")
    s.add_argument("--size", type=positive_int, default=512)
    s.add_argument("--force", action="store_true", help="overwrite OUT.png if it exists")


def run(args: argparse.Namespace) -> int:
    """Draw the radiograph and write it; 0."""
    out = refuse_overwrite(args.output, args.force)
    try:
        write_example_radiograph(out, age_months=args.age, sex=Sex.parse(args.sex).value, size=args.size)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    print(f"wrote a SYNTHETIC hand radiograph (not a real patient) to {out}; the quality gate "
          f"tells such drawings from real radiographs, so predict it with --force")
    return 0
