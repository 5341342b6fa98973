"""The upper end of the Greulich–Pyle range: an estimate the model cannot tell from a mature
skeleton is read as "at or near skeletal maturity" with the lower bound it can back, the same
way in the text output, the report, JSON and the results CSV."""

import datetime

import numpy as np
import pytest

from boneage.clinical.reference import GP_MATURE_MONTHS, maturity_statement
from boneage.inference.files import FileResult
from boneage.inference.interval import PredictionInterval
from boneage.inference.predictor import Prediction
from boneage.sex import Sex


def _interval(centre, half=19.0):
    return PredictionInterval(centre - half, centre + half, 0.9)


@pytest.mark.parametrize("sex, months, near", [
    ("F", 196.0, False),    # interval top 215 < 216: the model can tell it from maturity
    ("F", 198.0, True),     # 217 >= 216
    ("M", 208.0, False),    # 227 < 228
    ("M", 210.0, True),
    ("M", 240.0, True),
])
def test_near_maturity_when_the_interval_reaches_the_last_standard(sex, months, near):
    text = maturity_statement(months, Sex.parse(sex), _interval(months))
    assert (text is not None) == near
    if near:
        low = min(months - 19.0, GP_MATURE_MONTHS[Sex.parse(sex)]) / 12
        assert text.startswith("at or near skeletal maturity: at least ")
        assert f"at least {low:.1f} years (low end of the 90% interval)" in text
        assert ("19 years for boys" if sex == "M" else "18 years for girls") in text
        assert f"{months:.1f}" not in text and f"{months / 12:.1f} years" not in text


def test_without_an_interval_within_12_months_of_the_last_standard():
    assert maturity_statement(203.9, Sex.FEMALE) is None
    text = maturity_statement(204.0, Sex.FEMALE)
    assert text == ("at or near skeletal maturity: within 12 months of the end of the "
                    "Greulich–Pyle atlas (18 years for girls)")


def _prediction(months, sex="F"):
    return Prediction(bone_age_months=months, sex=Sex.parse(sex), spread_months=1.0, n_views=6,
                      model_name="m", model_hash="abc", interval=_interval(months))


def test_every_output_says_it_the_same_way(tmp_path):
    from boneage.reporting.report import BoneAgeReport

    mature, child = _prediction(205.0), _prediction(120.0)
    statement = mature.maturity
    assert statement and child.maturity is None
    assert mature.bone_age_text() == statement and child.bone_age_text() == "120.0 months (10.0 years)"
    assert mature.to_dict()["maturity"] == statement and child.to_dict()["maturity"] is None
    assert FileResult(path="a.png", prediction=mature).row()["maturity"] == statement
    assert FileResult(path="b.png", prediction=child).row()["maturity"] == ""
    report = BoneAgeReport(image_name="a.png", image_format="png", image_size=(40, 30), patient={},
                           prediction=mature, sex_source="given", overlay=np.zeros((4, 3, 3), np.uint8),
                           heatmap_peak=None, report_date=datetime.datetime(2026, 12, 6))
    reading = dict(report.sections()[1][1])
    assert reading["Bone age"] == statement
    assert report.to_dict(overlay=False)["maturity"] == statement
