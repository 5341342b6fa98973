from pathlib import Path

import pytest

from boneage.config import Recipe, apply_overrides, load_recipe
from boneage.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_names_a_registered_model(path):
    from boneage.models import list_models
    from boneage.models.segmenter import SEGMENTERS

    r = load_recipe(path)
    # a segmentation recipe names a segmentation network (they map images to masks, not months)
    assert r.model.name in (SEGMENTERS.names() if r.task == "segmentation" else list_models())
    assert r.name != "unnamed"


def test_unknown_keys_are_rejected_with_the_valid_ones(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ntrain: {epochs: 2, epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' in recipe.train; valid keys: \[.*'epochs'"):
        load_recipe(p)


def test_types_checked_and_overrides_applied(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\noptim: {lr: 0.01}\n")
    r = load_recipe(p, ["optim.lr=1e-4", "train.epochs=3", "model.options.sex_units=0"])
    assert r.optim.lr == pytest.approx(1e-4) and r.train.epochs == 3
    assert r.model.options == {"sex_units": 0}
    with pytest.raises(ConfigError, match=r"recipe.train.epochs: Input should be a valid integer.*\(got 'many'\)"):
        load_recipe(p, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["oops"])


def test_round_trip_through_yaml_keeps_every_section():
    import yaml

    r = Recipe.from_dict({
        "name": "a", "task": "regression", "data": {"root": "d", "val_fraction": 0.2, "split_seed": 3},
        "preprocess": [{"name": "resize", "size": 64}], "canonical": [{"name": "stretch"}],
        "augment": {"mode": "one_of", "steps": ["identity", {"name": "rotate", "max_deg": 5}]},
        "patches": {"n": 9, "size": 32, "samples_per_epoch": 10}, "channels": 3, "input_mean": 0.4,
        "model": {"name": "small_cnn", "options": {"width": 4}}, "loss": {"name": "gaussian_mse", "options": {"sigma": 5}},
        "optim": {"name": "sgd", "lr": 0.5, "grad_clip": 2.0}, "schedule": {"name": "step", "step_size": 3},
        "train": {"epochs": 7, "sampler": "balanced", "init_from": "m.safetensors"},
        "target": {"mean": 100.0, "std": 40.0},
        "inference": {"aggregate": "percentile", "percentile": 30, "tta_angles": [-5, 5], "tta_border": "replicate"},
    })
    again = Recipe.from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict())))
    assert again == r and again.to_dict() == r.to_dict()
    assert again.patches.samples_per_epoch == 10 and again.inference.tta_angles == [-5.0, 5.0]


def test_base_recipes_merge_and_overrides_go_on_top(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\noptim: {name: adam, lr: 0.01}\n"
                                        "preprocess: [{name: resize, size: 64}]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nname: child\noptim: {lr: 0.001}\n")
    r = load_recipe(tmp_path / "sub" / "child.yaml", ["train.epochs=2"])
    assert (r.name, r.optim.name, r.optim.lr, r.train.epochs) == ("child", "adam", 0.001, 2)
    assert r.preprocess == [{"name": "resize", "size": 64}]  # lists are inherited whole


def test_base_loops_missing_bases_and_non_text_files_are_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"in a loop \(a.yaml -> b.yaml -> a.yaml\)"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base recipe nowhere.yaml not found"):
        load_recipe(tmp_path / "c.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="bin.yaml: not a text file"):
        load_recipe(tmp_path / "bin.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(tmp_path / "bad.yaml")
    assert "not valid YAML at line" in str(err.value) and "\n" not in str(err.value)


def test_shipped_variants_are_their_base_plus_a_few_keys():
    from boneage.config import read_recipe_data

    for path in sorted(CONFIGS.glob("*.yaml")):
        own = __import__("yaml").safe_load(path.read_text())
        if "base" in own:
            assert (CONFIGS / own["base"]).is_file()
            assert len(own) <= 6, f"{path.name} repeats more than its differences"
            assert read_recipe_data(path)["name"] == path.stem
