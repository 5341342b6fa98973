"""BoneAgeNet, trained from scratch by the shared loop, learns bone age where the answer is known.

On rsna-100px a from-scratch run of a few hundred steps still predicts about the mean (docs/
results.md, issue 10); this test shows that the network, its head and the loop are able to learn,
so that such a run is read as a budget too small, not as a broken model.
"""

import csv
import json

import numpy as np
import pytest

from boneage.config import Recipe
from boneage.evaluation.training import fit
from boneage.inference import read_model_metadata
from synthetic_runs import synthetic_recipe


@pytest.mark.slow
def test_boneagenet_from_scratch_beats_predicting_the_mean(learn_folder, tmp_path):
    cfg = synthetic_recipe(learn_folder).to_dict()
    # 80 px: the smallest round size above the network's 75-px minimum; a narrow, shallow
    # network so that 8 epochs take seconds on one CPU core.
    cfg["preprocess"] = [{"name": "resize", "size": 80}]
    cfg["model"] = {"name": "inception_v3_scaled",
                    "options": {"width": 0.15, "repeats": [1, 1, 1], "sex_units": 4, "output_l2": 0.01}}
    cfg["loss"] = {"name": "mse"}
    cfg["train"]["bn_recalibration_batches"] = 4
    res = fit(Recipe.from_dict(cfg), tmp_path, progress=False, log=lambda *_: None)

    recipe, _ = read_model_metadata(res.model_path)
    rows = list(csv.DictReader(open(tmp_path / "val_predictions.csv")))
    true = np.array([float(r["boneage"]) for r in rows])
    baseline = float(np.mean(np.abs(true - recipe.target.mean)))
    assert json.loads((tmp_path / "val_summary.json").read_text())["n"] == 60
    # measured: 19.0 against a baseline of 64.5
    assert res.best_val_mae < 0.5 * baseline, (res.best_val_mae, baseline)
