import json

import pytest

from boneage.cli.main import main
from boneage.evaluation.complexity import format_complexity, model_complexity


def test_complexity_counts_parameters_by_hand():
    row = model_complexity("small_cnn", patch_size=16, n_patches=2, repeats=1,
                           options={"width": 4, "stages": 1, "sex_units": 0})
    # conv 1->4 (36) + BN (8) + conv 4->4 (144) + BN (8) + output Linear(4, 1) (5)
    assert row["parameters"] == 201
    # float32 weights + per BN: running mean/var (4+4 floats) and an int64 counter
    assert row["memory_bytes"] == 201 * 4 + 2 * (8 * 4 + 8)
    assert row["file_bytes"] > row["memory_bytes"] and row["cpu_seconds_per_image"] > 0
    assert "small_cnn" in format_complexity([row])
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        model_complexity("small_cnn", repeats=0)


def test_complexity_cli_json_and_bad_name(capsys):
    assert main(["complexity", "--models", "small_cnn", "--patch-size", "16", "--patches", "2",
                 "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == "small_cnn" and rows[0]["patches"] == 2
    assert main(["complexity", "--models", "resnet81"]) == 2
    assert "unknown model(s) ['resnet81']" in capsys.readouterr().err
