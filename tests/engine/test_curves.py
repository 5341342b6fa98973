"""The training curves every run writes: real PNGs, atomically, without pyplot."""

import subprocess
import sys

import pytest

from boneage.engine.curves import phase_starts, plot_training_curves
from pngfile import check_png


HISTORY = [
    {"epoch": e, "train_loss": 10 / e, "val_loss": 12 / e, "val_mae": 20 / e, "lr": 1e-3}
    for e in range(1, 6)
]


def test_training_curves(tmp_path):
    out = plot_training_curves(HISTORY, str(tmp_path / "curves.png"))
    assert out == tmp_path / "curves.png"
    check_png(out)


def test_training_curves_with_missing_values(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "val_mae"} for r in HISTORY]
    rows[2]["val_loss"] = None
    rows[3]["train_loss"] = float("nan")
    check_png(plot_training_curves(rows, tmp_path / "a" / "c.png"))
    # Only MAE, no epoch numbers; and a single epoch.
    check_png(plot_training_curves([{"val_mae": 9.0}, {"val_mae": 7.0}], tmp_path / "b" / "c.png"))
    check_png(plot_training_curves(HISTORY[:1], tmp_path / "c" / "c.png"))


def test_training_curves_rejects_nothing_to_plot(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match="no values.*keys present.*lr"):
        plot_training_curves([{"epoch": 1, "lr": 0.1}], tmp_path / "c.png")


def test_phase_starts_mark_where_each_later_phase_began():
    rows = [{"epoch": 1, "phase": "head"}, {"epoch": 2, "phase": "head"}, {"epoch": 3},
            {"epoch": 4, "phase": "head+exit"}]
    # A row without a phase (epoch 3) neither starts nor ends one.
    assert phase_starts(rows) == [(4, "head+exit")]


def test_training_curves_do_not_touch_pyplot(tmp_path):
    # A fresh interpreter: pyplot may already be imported by other tests here.
    code = (
        "import sys\n"
        "from boneage.engine.curves import plot_training_curves\n"
        f"plot_training_curves([{{'epoch': 1, 'train_loss': 1.0}}], {str(tmp_path / 'c.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    check_png(tmp_path / "c.png")
