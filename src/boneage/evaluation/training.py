"""Training a recipe of any task, with its validation report: what ``boneage train`` calls.

The loop (:func:`boneage.engine.fit`) sits below the method packages, so it knows tasks only
through the registry :data:`boneage.engine.tasks.TASKS` and writes no evaluation report of
its own. This module sits above them: importing it registers every task (``segmentation``,
``gan``; ``regression`` is the engine's own), and its :func:`fit` passes the loop the report
of the validation predictions (``val_predictions.csv``, ``val_summary.json`` and their
plots, :func:`boneage.evaluation.report.write_prediction_report`). :func:`check_recipe` is
the engine's, re-exported so that a caller holding it has every task registered too.
"""

from __future__ import annotations

from pathlib import Path

# Imported for their registration into TASKS ("gan", "segmentation"), which the loop needs.
import boneage.enhancement.task  # noqa: F401
import boneage.segmentation.task  # noqa: F401
from boneage.config import Recipe
from boneage.data.labels import Sample
from boneage.engine import trainer
from boneage.engine.check import check_recipe
from boneage.engine.tasks import TASKS
from boneage.evaluation.report import write_prediction_report

__all__ = ["fit", "check_recipe", "TASKS"]


def fit(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, samples: list[Sample] | None = None, log=None) -> trainer.FitResult:
    """Train ``recipe`` (any registered task) into ``out_dir`` as :func:`boneage.engine.fit`
    does, and write the report of its validation predictions there (prefix ``val_``)."""
    return trainer.fit(recipe, out_dir, resume=resume, overwrite=overwrite, progress=progress,
                       samples=samples, log=log, report=write_prediction_report)
