"""benchmarks/train_throughput.py times the trainer's own steps and reports real figures."""

import json

import yaml

from benchmark_script import load_benchmark
from synthetic_runs import synthetic_recipe


def test_throughput_benchmark_reports_items_per_second_as_json(learn_folder, tmp_path, capsys):
    bench = load_benchmark("train_throughput")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(synthetic_recipe(learn_folder).to_dict()))
    code = bench.main([str(cfg), "train.batch_size=4", "--data", str(learn_folder), "--images", "8",
                       "--steps", "2", "--warmup", "1", "--amp", "bf16", "--channels-last", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["unit"], result["batch_size"], result["input"], result["steps"]) == ("images", 4, [1, 48, 48], 2)
    assert (result["amp"], result["channels_last"], result["device"]) == ("bfloat16", True, "cpu")
    assert result["items_per_second"] > 0 and 0 <= result["loader_wait_fraction"] < 1
    assert result["device_name"].endswith("cores visible)")
    assert bench.main([str(cfg), "train.amp=fp32", "--json"]) == 2
    assert "recipe.train.amp: must be false, true" in capsys.readouterr().err
