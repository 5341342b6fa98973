"""Classical baselines: features, kNN / SVM beat the mean predictor, and the CLI."""

import json
import math

import numpy as np
import pytest

from boneage.cli.main import main
from boneage.data.labels import load_samples
from boneage.evaluation.baselines import fit_baseline, image_features, run_baseline, with_sex


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from boneage.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("baseline")
    train = write_synthetic_dataset(root / "train", 120, size=48, seed=11)
    test = write_synthetic_dataset(root / "eval", 40, size=48, seed=12)
    return train, test


def mean_predictor_mae(train, test) -> float:
    mean = np.mean([s.boneage for s in load_samples(train)])
    return float(np.mean([abs(s.boneage - mean) for s in load_samples(test)]))


def test_image_features():
    img = np.zeros((40, 60), dtype=np.float32)
    img[:, 30:] = 1.0
    f = image_features(img, size=8)
    assert f.shape == (8 * 8 + 21,) and f.dtype == np.float32
    small = f[:64].reshape(8, 8)
    assert (small[:, :4] == 0).all() and (small[:, 4:] == 1).all()
    hist = f[64:80]
    assert hist.sum() == pytest.approx(1.0) and hist[0] == pytest.approx(0.5) and hist[-1] == pytest.approx(0.5)
    assert f[80] == pytest.approx(0.5)  # mean
    with pytest.raises(ValueError):
        image_features(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        image_features(img, size=0)


def test_unknown_kind_and_bad_shapes_are_rejected():
    X, y, male = np.random.rand(10, 3), np.arange(10.0), np.zeros(10)
    with pytest.raises(ValueError, match="knn, svm"):
        fit_baseline("forest", X, y, male)
    with pytest.raises(ValueError, match="knn, svm"):
        run_baseline("forest", "nowhere", "nowhere")
    with pytest.raises(ValueError, match="length mismatch"):
        fit_baseline("knn", X, y[:5], male)
    # Fewer samples than k still predicts.
    model = fit_baseline("knn", X[:3], y[:3], male[:3])
    assert model.predict(with_sex(X[:2], male[:2])).shape == (2,)


@pytest.mark.parametrize("kind,factor", [("knn", 0.9), ("svm", 0.8)])
def test_baselines_beat_the_mean_predictor(folders, kind, factor):
    train, test = folders
    summary = run_baseline(kind, train, test)
    assert summary["method"] == kind and summary["n"] == 40 and summary["n_train"] == 120
    assert summary["mae"] < factor * mean_predictor_mae(train, test)


def test_baseline_cli(capsys, folders):
    train, test = folders
    code = main(["baseline", "knn", "--train", str(train), "--eval", str(test), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = json.loads(out.strip().splitlines()[-1])
    assert row["n"] == 40 and math.isfinite(row["mae"]) and row["method"] == "knn"

    code = main(["baseline", "svm", "--train", str(train), "--eval", str(test), "--limit", "20", "--size", "16"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "n = 20" in out and "MAE" in out and "trained on 20 images" in out

    assert main(["baseline", "forest", "--train", str(train), "--eval", str(test)]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.strip().splitlines()) == 1
