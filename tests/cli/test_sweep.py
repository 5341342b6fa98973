"""boneage sweep: a tiny grid on synthetic radiographs writes the table 1 of the BoneAgeNet
paper, resumes after an interruption, and refuses bad grids before any training."""

import csv
import json
from pathlib import Path

import pytest

from boneage.config import load_recipe
from boneage.evaluation.sweep import RUN_MARKER, Sweep, plan_sweep, read_sweep, run_sweep

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def recipe(tmp_path, synthetic_folder) -> Path:
    """A scaled Inception-v3 small enough to train two epochs in about a second."""
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""name: tiny
data: {{root: {synthetic_folder}, limit: 16, val_fraction: 0.25}}
preprocess: [{{name: resize, size: 80}}]
model: {{name: inception_v3_scaled, options: {{width: 0.05, repeats: [1, 1, 1], early_repeats: [1, 0]}}}}
train: {{epochs: 2, batch_size: 6, device: cpu}}
""")
    return path


class Interrupt(Exception):
    pass


def test_sweep_writes_the_table_and_resumes_after_an_interruption(cli, recipe, tmp_path):
    out = tmp_path / "sweep"
    sweep = Sweep(recipe=recipe, name="tiny-sweep", grid={"model.options.width": [0.05, 0.1]},
                  seeds=[0, 1], train_mae_images=6)
    seen = []

    def interrupt_second_run(message):
        seen.append(message)
        # killed after the second run's first epoch (its checkpoint is written by then)
        if message.startswith("epoch 1/2") and sum(m.startswith("[2/4]") for m in seen):
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(sweep, out, progress=False, log=interrupt_second_run)
    first, second = out / "width0.05_seed0", out / "width0.05_seed1"
    assert (first / RUN_MARKER).is_file() and not (second / RUN_MARKER).is_file()
    assert (second / "checkpoint.pt").is_file()
    kept = (first / "model.safetensors").stat().st_mtime_ns
    assert len(list(csv.DictReader(open(out / "sweep.csv")))) == 1  # the table so far

    code, stdout, err = cli("sweep", recipe, "--grid", "model.options.width=0.05,0.1", "--seeds", "0,1",
                            "--train-mae-images", "6", "--out", out, "--quiet")
    assert code == 0, err
    assert "[1/4] width0.05_seed0: finished before, kept" in err
    assert "[2/4] width0.05_seed1: resuming" in err and "resuming after epoch 1" in err
    assert "[3/4] width0.1_seed0: training" in err
    assert (first / "model.safetensors").stat().st_mtime_ns == kept
    assert stdout.strip().endswith(f"table: {out / 'sweep.md'} (+ sweep.csv, sweep.json)")
    history = list(csv.DictReader(open(second / "metrics.csv")))
    assert [h["epoch"] for h in history] == ["1", "2"]

    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["run"] for r in rows] == ["width0.05_seed0", "width0.05_seed1", "width0.1_seed0", "width0.1_seed1"]
    assert {r["repeats"] for r in rows} == {"1/1/1"} and [r["width"] for r in rows] == ["0.05", "0.05", "0.1", "0.1"]
    assert int(rows[2]["parameters"]) > int(rows[0]["parameters"])
    assert rows[0]["diff_vs_first"] == "" and all(r["diff_vs_first"] for r in rows[1:])
    assert all(float(r["train_mae"]) > 0 and float(r["val_mae"]) > 0 for r in rows)
    table = (out / "sweep.md").read_text()
    assert "| run | β | n.Mixed5 | n.Mixed7 | n.Mixed9 | seed | parameters | train MAE | val MAE |" in table
    assert "Finished: 4 of 4 runs." in table and "Mean over seeds:" in table
    assert json.loads((out / "sweep.json").read_text())["sweep"]["grid"] == {"model.options.width": [0.05, 0.1]}

    # Everything finished: a third call trains nothing.
    code, _, err = cli("sweep", recipe, "--grid", "model.options.width=0.05,0.1", "--seeds", "0,1",
                       "--train-mae-images", "6", "--out", out, "--quiet")
    assert code == 0 and err.count("finished before, kept") == 4 and "training" not in err


def test_a_finished_run_of_another_recipe_is_not_reused(cli, recipe, tmp_path):
    out = tmp_path / "s"
    args = ["sweep", recipe, "--grid", "model.options.width=0.05", "--train-mae-images", "0", "--out", out, "--quiet"]
    assert cli(*args)[0] == 0
    code, _, err = cli(*args, "optim.lr=0.01")
    assert code == 2 and "holds a finished run of another recipe" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--grid", "model.options.widht=0.5,1"],
     "grid key 'model.options.widht' does not exist: model 'inception_v3_scaled' takes no option 'widht' "
     "(did you mean 'width'?)"),
    (["--grid", "model.width=0.5,1"], "grid key 'model.width' does not exist: model has no 'width'"),
    (["--grid", "train.epcohs=1,2"], "grid key 'train.epcohs' does not exist: train has no 'epcohs' (did you mean 'epochs'?)"),
    (["--grid", "model.options.width=0.1,0"], "sweep run width0_seed0: model 'inception_v3_scaled': width must be a number > 0"),
    (["--grid", "model.options.width=-1"], "width must be a number > 0 (β, the factor on every convolution's filter count"),
    (["--grid", "model.options.repeats=[2,-1,2]"], "repeats[1] must be a whole number >= 0 (repeats of Mixed7), got -1"),
    (["--grid", "model.options.repeats=[2,1.5,2]"], "repeats[1] must be a whole number >= 0 (repeats of Mixed7), got 1.5"),
    (["--grid", "model.options.width=0.1", "preprocess=[{name: resize, size: 64}]"],
     "input 64x64 is too small for inception_v3_scaled: each side must be at least 75 px"),
    (["--grid", "train.epochs=1,2"], "the runs of a sweep share one budget"),
    (["--grid", "model.options.width"], "--grid 'model.options.width' must look like KEY=V1,V2,..."),
    (["--grid", "model.options.width=0.1", "--seeds", "0,x"], "--seeds must be comma-separated whole numbers, got '0,x'"),
    ([], "a sweep needs something to vary"),
])
def test_bad_sweeps_fail_in_one_line_before_any_training(cli, recipe, tmp_path, argv, message):
    out = tmp_path / "never"
    code, stdout, err = cli("sweep", recipe, *argv, "--out", out)
    assert code == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("path", sorted((CONFIGS / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweep_files_plan_valid_runs(path):
    sweep = read_sweep(path)
    runs = plan_sweep(sweep, check=False)  # every key exists, every recipe validates
    base = load_recipe(sweep.recipe)
    assert len(runs) >= 3 and all(r.recipe.model.name == base.model.name for r in runs)
    assert len({r.run for r in runs}) == len(runs)
    assert all(r.recipe.train.epochs == runs[0].recipe.train.epochs for r in runs)  # one budget


def test_dry_run_checks_and_lists_without_training(cli, recipe, tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"recipe: {recipe.name}\ngrid: {{model.options.width: [0.05]}}\n"
                     "variants: [{}, {model.options.repeats: [0, 1, 1]}]\n")
    code, stdout, err = cli("sweep", sweep, "--dry-run", "--out", tmp_path / "o")
    assert code == 0, err
    assert stdout.splitlines()[-1] == "2 run(s) checked; nothing trained (--dry-run)"
    assert f"{tmp_path / 'o' / 'repeats0-1-1_width0.05_seed0'}: model.options.repeats=[0, 1, 1]" in stdout
    assert not (tmp_path / "o").exists()
    (tmp_path / "bad.yaml").write_text("recipe: x.yaml\ngrdi: {}\n")
    code, _, err = cli("sweep", tmp_path / "bad.yaml", "--dry-run")
    assert code == 2 and "unknown key(s) ['grdi'] in the sweep file" in err
