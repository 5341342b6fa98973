"""Plots write real PNGs, atomically, without touching global matplotlib state."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from boneage.evaluation import (
    plot_bland_altman,
    plot_error_by_age_bin,
    plot_pred_vs_true,
)
from pngfile import PNG_SIGNATURE, check_png


_rng = np.random.default_rng(0)
TRUE = _rng.uniform(0, 228, 60)
PRED = TRUE + _rng.normal(1.0, 8.0, 60)
MALE = _rng.random(60) < 0.5

@pytest.mark.parametrize(
    "plot, kwargs",
    [
        (plot_pred_vs_true, {}),
        (plot_pred_vs_true, {"male": MALE, "title": "Validation"}),
        (plot_bland_altman, {}),
        (plot_bland_altman, {"title": "Test set"}),
        (plot_error_by_age_bin, {}),
        (plot_error_by_age_bin, {"male": MALE}),
        (plot_error_by_age_bin, {"male": np.ones(60, bool), "bins": [0, 100, 250]}),
    ],
)
def test_prediction_plots_write_png(tmp_path, plot, kwargs):
    out = tmp_path / "nested" / "deeper" / "plot.png"
    result = plot(list(PRED), TRUE, out, **kwargs)
    assert result == out and isinstance(result, Path)
    check_png(out)


def test_single_point_plots(tmp_path):
    plot_pred_vs_true([10.0], [12.0], tmp_path / "a" / "p.png")
    plot_bland_altman([10.0], [12.0], tmp_path / "b" / "p.png")
    check_png(tmp_path / "a" / "p.png")
    check_png(tmp_path / "b" / "p.png")


def test_prediction_plots_validate_input(tmp_path):
    with pytest.raises(ValueError, match="length mismatch"):
        plot_pred_vs_true([1, 2], [1, 2, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-finite"):
        plot_bland_altman([1, float("nan")], [1, 2], tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "plot.png"
    out.write_bytes(b"previous")

    def broken_savefig(self, fh, **kwargs):
        fh.write(PNG_SIGNATURE + b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(KeyboardInterrupt):
        plot_bland_altman(PRED, TRUE, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_plots_do_not_touch_pyplot(tmp_path):
    # Run in a fresh interpreter: pyplot may already be imported by other tests here.
    code = (
        "import sys\n"
        "from boneage.evaluation import plot_pred_vs_true\n"
        f"plot_pred_vs_true([1, 2, 3], [1, 2, 4], {str(tmp_path / 'p.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    check_png(tmp_path / "p.png")
