"""boneage complexity --boneagenet: the paper's table-1 variants with our and its counts."""

import json

from boneage.evaluation.complexity import format_complexity, model_complexity


def test_complexity_lists_the_boneagenet_variants_beside_the_papers_counts(cli):
    code, out, err = cli("complexity", "--boneagenet", "--json")
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads(out)}
    assert len(rows) == 10
    final = rows["boneagenet final"]
    assert final["paper_parameters"] == 78_000_000 and abs(final["parameters"] - 78e6) < 0.5e6
    assert final["options"] == {"width": 1.4, "repeats": [4, 3, 3], "extra_fc": True, "dropout": 0.5}
    assert abs(rows["boneagenet final-nofc"]["parameters"] - 69.7e6) < 0.1e6
    assert final["cpu_seconds_per_image"] is None  # counted, not timed, unless --time
    code, text, _ = cli("complexity", "--boneagenet")
    assert code == 0 and "boneagenet modified-3" in text and "paper" in text.splitlines()[0]
    code, _, err = cli("complexity", "--boneagenet", "--time", "--size", "64")
    assert code == 2 and "--size 64 is too small for BoneAgeNet: at least 75 px" in err


def test_a_timed_scaled_inception_row():
    row = model_complexity("inception_v3_scaled", options={"width": 0.1}, patch_size=80, n_patches=1, repeats=1)
    assert row["file_bytes"] > row["memory_bytes"] > 4 * row["parameters"] * 0.99
    assert row["cpu_seconds_per_image"] > 0 and "inception_v3_scaled" in format_complexity([row])
