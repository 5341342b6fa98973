"""``boneage models``: the registered networks by kind (regression, segmentation, enhancement).

:func:`add_arguments` fills its parser, :func:`run` runs it (:mod:`boneage.cli.main`
dispatches to both).
"""

from __future__ import annotations

import argparse

from boneage.models.enhancer import ENHANCERS
from boneage.models import list_models
from boneage.models.segmenter import SEGMENTERS


def add_arguments(s: argparse.ArgumentParser) -> None:
    """``models`` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    """Print the names of every kind; 0."""
    kinds = (("regression", "bone age from a radiograph and sex: a recipe's model.name", list_models()),
             ("segmentation", "hand masks, task: segmentation: model.name", SEGMENTERS.names()),
             ("enhancement", "pix2pix, task: gan: options under gan.generator / gan.discriminator",
              ENHANCERS.names()))
    for kind, what, names in kinds:
        print(f"{kind} ({what})")
        for name in names:
            print(f"  {name}")
    return 0
