"""The training loop learns, resumes, and writes what it promises."""

import csv
import json

import numpy as np
import pytest
import torch

from boneage.evaluation.training import fit  # the loop and its validation report
from boneage.errors import ConfigError, InputError
from boneage.io import read_image
from boneage.inference.loader import load_predictor
from synthetic_runs import synthetic_recipe


@pytest.fixture(scope="module")
def trained(learn_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = fit(synthetic_recipe(learn_folder), out, progress=False, log=lambda *_: None)
    return res, out


def test_training_beats_predict_the_mean_by_a_clear_margin(trained):
    res, out = trained
    rows = list(csv.DictReader(open(out / "val_predictions.csv")))
    true = np.array([float(r["boneage"]) for r in rows])
    summary = json.loads((out / "val_summary.json").read_text())
    # baseline: always predict the training mean (the model's stored target mean)
    from boneage.inference import read_model_metadata
    recipe, info = read_model_metadata(res.model_path)
    baseline = float(np.mean(np.abs(true - recipe.target.mean)))
    assert summary["n"] == 60 and info["n_val"] == 60
    assert res.best_val_mae == pytest.approx(summary["mae"], abs=1e-3)
    assert res.best_val_mae < 0.6 * baseline, (res.best_val_mae, baseline)


def test_run_writes_metrics_plots_and_a_standalone_model(trained, learn_folder):
    res, out = trained
    for name in ("model.safetensors", "checkpoint.pt", "metrics.csv", "training_curves.png",
                 "val_pred_vs_true.png", "val_bland_altman.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    # the file alone reproduces the validation prediction of an image
    pred_rows = {r["id"]: r for r in csv.DictReader(open(out / "val_predictions.csv"))}
    some_id = sorted(pred_rows)[0]
    p = load_predictor(res.model_path)
    got = p.predict(read_image(learn_folder / "images" / f"{some_id}.png").pixels,
                    "M" if pred_rows[some_id]["male"] == "True" else "F")
    assert got.bone_age_months == pytest.approx(float(pred_rows[some_id]["predicted"]), abs=0.02)


def test_resume_continues_and_matches_an_uninterrupted_run(learn_folder, tmp_path):
    recipe = synthetic_recipe(learn_folder, epochs=3)
    recipe.data.limit = 80
    full = fit(recipe, tmp_path / "full", progress=False, log=lambda *_: None)
    recipe2 = synthetic_recipe(learn_folder, epochs=2)
    recipe2.data.limit = 80
    fit(recipe2, tmp_path / "part", progress=False, log=lambda *_: None)
    # same recipe except the epoch budget: resume refuses a different recipe...
    with pytest.raises(InputError, match=r"another recipe \(differing: train\.epochs\)"):
        fit(recipe, tmp_path / "part", resume=True, progress=False, log=lambda *_: None)
    # ...so emulate an interruption of the 3-epoch run after 2 epochs by truncating its budget
    import torch
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    ck["recipe"]["train"]["epochs"] = 3
    # A checkpoint written before a recipe field existed resumes with that field's default.
    del ck["recipe"]["train"]["bn_recalibration_batches"]
    torch.save(ck, tmp_path / "part" / "checkpoint.pt")
    resumed = fit(recipe, tmp_path / "part", resume=True, progress=False, log=lambda *_: None)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["val_mae"] == pytest.approx(full.history[-1]["val_mae"], rel=1e-3)


def test_existing_run_is_not_overwritten(trained, learn_folder):
    _, out = trained
    with pytest.raises(InputError, match="already holds a training run"):
        fit(synthetic_recipe(learn_folder), out, progress=False, log=lambda *_: None)


def test_patch_recipe_trains_a_few_steps(learn_folder, tmp_path):
    r = synthetic_recipe(learn_folder, epochs=1, max_steps_per_epoch=3)
    r.data.limit = 40
    r.preprocess = [{"name": "resize", "size": 40}]
    from boneage.config import PatchConfig

    r.patches = PatchConfig(n=4, size=24, samples_per_epoch=64)
    r.inference.aggregate = "median"
    res = fit(r, tmp_path / "p", progress=False, log=lambda *_: None)
    assert np.isfinite(res.best_val_mae)
    p = load_predictor(res.model_path)
    pred = p.predict(np.random.default_rng(0).random((64, 64)).astype(np.float32), "F")
    assert pred.n_views == 4 and np.isfinite(pred.bone_age_months)


def test_tuned_percentile_is_stored_in_the_model_file(learn_folder, tmp_path):
    from boneage.config import PatchConfig
    from boneage.inference import read_model_metadata

    r = synthetic_recipe(learn_folder, epochs=1, max_steps_per_epoch=4)
    r.data.limit = 48
    r.patches = PatchConfig(n=9, size=32, samples_per_epoch=64)
    r.inference.tune_percentile = True
    res = fit(r, tmp_path / "t", progress=False, log=lambda *_: None)
    recipe, info = read_model_metadata(res.model_path)
    assert recipe.inference.aggregate == "percentile"
    assert 0 <= recipe.inference.percentile <= 100
    tuned = info["val_mae_by_aggregate"][f"percentile_{recipe.inference.percentile:g}"]
    assert tuned <= info["val_mae_by_aggregate"]["median"] + 1e-9
    assert info["val_mae"] == tuned


def test_the_loop_alone_hands_its_validation_predictions_to_the_report_it_is_given(learn_folder, tmp_path):
    from boneage.engine import fit as loop_fit
    from boneage.inference import read_model_metadata

    r = synthetic_recipe(learn_folder, epochs=1, max_steps_per_epoch=2)
    r.data.limit = 24
    # Without a report the loop writes the model, metrics and curves, and no prediction report.
    res = loop_fit(r, tmp_path / "bare", progress=False, log=lambda *_: None)
    assert (tmp_path / "bare" / "training_curves.png").is_file()
    assert not list((tmp_path / "bare").glob("val_*"))
    calls = []
    loop_fit(r, tmp_path / "own", progress=False, log=lambda *_: None,
             report=lambda out, samples, preds, **kw: calls.append((out, samples, preds, kw)))
    (out, samples, preds, kw), = calls
    _, info = read_model_metadata(res.model_path)
    assert out == tmp_path / "own" and [s.id for s in samples] == info["val_ids"] and len(preds) == 6
    assert kw["prefix"] == "val_" and len(kw["spreads"]) == 6
    assert set(kw["extra"]["mae_by_aggregate"]) == {"mean", "median"}


def test_an_unregistered_task_says_where_tasks_come_from():
    from boneage.engine.tasks import task_class

    with pytest.raises(ConfigError, match="unknown task 'nope'.*valid names: .*regression.*"
                                          "boneage.evaluation.training imports every task"):
        task_class("nope")


# Both tests take no optimisation step on purpose, so the epoch's schedule step comes before
# any optimiser step and PyTorch warns about the order; in real training a step always comes first.
ZERO_STEPS = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")


@ZERO_STEPS
def test_init_from_starts_where_another_model_ended(trained, learn_folder, tmp_path):
    res, _ = trained
    # no optimisation step at all: validation must see exactly the initial weights
    r = synthetic_recipe(learn_folder, epochs=1, max_steps_per_epoch=0)
    r.train.init_from = str(res.model_path)
    again = fit(r, tmp_path / "ft", progress=False, log=lambda *_: None)
    assert again.best_val_mae == pytest.approx(res.best_val_mae, abs=1e-3)
    r.train.init_from = str(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="train.init_from: .*missing.safetensors: model file not found"):
        fit(r, tmp_path / "ft2", progress=False, log=lambda *_: None)
    assert not (tmp_path / "ft2").exists()


@ZERO_STEPS
def test_early_stopping_and_schedules(learn_folder, tmp_path):
    import torch

    from boneage.engine import make_optimizer, make_scheduler
    from boneage.errors import ConfigError

    r = synthetic_recipe(learn_folder, epochs=10, early_stopping=2, max_steps_per_epoch=0)
    r.data.limit = 40
    res = fit(r, tmp_path / "es", progress=False, log=lambda *_: None)
    # no step is taken, so validation never improves after epoch 1: stop after 1 + 2 epochs
    assert res.epochs_run == 3 and res.best_epoch == 1

    params = [torch.nn.Parameter(torch.zeros(1))]
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)):
        r.optim.name = name
        assert isinstance(make_optimizer(r, params), cls)
    r.optim.name = "adamm"
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm' \\(did you mean 'adam'\\?\\)"):
        make_optimizer(r, params)
    r.optim.name = "adam"
    opt = make_optimizer(r, params)
    r.schedule.name, r.schedule.step_size, r.schedule.gamma = "step", 2, 0.5
    sched = make_scheduler(r, opt)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003 * 0.25)
    r.schedule.name = "plateau"
    assert isinstance(make_scheduler(r, opt), torch.optim.lr_scheduler.ReduceLROnPlateau)


class _BNOnly(torch.nn.Module):
    """The smallest model with BatchNorm that takes (image, sex) like every registered model."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(1)

    def forward(self, x, sex):
        return self.bn(x).mean(dim=(1, 2, 3))


def test_recalibrate_batchnorm_sets_the_plain_average_of_batch_statistics():
    from boneage.engine.tasks import recalibrate_batchnorm

    model = _BNOnly().eval()
    model.bn.running_mean.fill_(100.0)  # stale statistics, as after fast weight updates
    sex = torch.zeros(4)
    batches = [{"image": torch.full((4, 1, 3, 3), v), "sex": sex} for v in (2.0, 4.0)]
    assert recalibrate_batchnorm(model, batches, torch.device("cpu")) == 2
    # Each batch is constant: means 2 and 4 average to 3 with zero variance.
    assert model.bn.running_mean.item() == pytest.approx(3.0)
    assert model.bn.running_var.item() == pytest.approx(0.0)
    assert model.bn.momentum == 0.1 and not model.training
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batchnorm(model, [], torch.device("cpu"))
    assert model.bn.running_mean.item() == pytest.approx(3.0)  # untouched by the refusal


def test_patch_recipe_learns_with_bn_recalibration(learn_folder, tmp_path):
    """Four 32-px patches of 48-px synthetic hands carry enough signal to learn bone age."""
    from boneage.config import PatchConfig
    from boneage.errors import ConfigError
    from boneage.inference import read_model_metadata

    recipe = synthetic_recipe(learn_folder, bn_recalibration_batches=6)
    recipe.patches = PatchConfig(n=4, size=32, samples_per_epoch=360)
    recipe.inference.aggregate = "median"
    res = fit(recipe, tmp_path / "ok", progress=False, log=lambda *_: None)
    true = np.array([float(r["boneage"]) for r in csv.DictReader(open(tmp_path / "ok" / "val_predictions.csv"))])
    baseline = float(np.mean(np.abs(true - read_model_metadata(res.model_path)[0].target.mean)))
    assert res.best_val_mae < 0.4 * baseline, (res.best_val_mae, baseline)
    with pytest.raises(ConfigError, match="bn_recalibration_batches must be >= 0, got -1"):
        fit(synthetic_recipe(learn_folder, bn_recalibration_batches=-1), tmp_path / "bad",
            progress=False, log=lambda *_: None)
    assert not (tmp_path / "bad").exists()


def test_a_run_killed_mid_epoch_resumes_to_the_same_metrics(learn_folder, tmp_path):
    import yaml

    recipe = synthetic_recipe(learn_folder, epochs=4)
    recipe.model.options["dropout"] = 0.3  # torch draws that a resume must repeat exactly
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe.to_dict()))
    # Float sums depend on how many threads split them; the killed run uses one, so do both here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = fit(recipe, tmp_path / "full", progress=False, log=lambda *_: None)
        resumed = _kill_and_resume(recipe, cfg, tmp_path / "killed")
    finally:
        torch.set_num_threads(threads)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(resumed.history, full.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_mae"] == pytest.approx(b["val_mae"], rel=1e-4)


def _kill_and_resume(recipe, cfg, out):
    """Train ``cfg`` in a subprocess, SIGKILL it after its first checkpoint, resume here."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "boneage", "train", str(cfg), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "checkpoint.pt").exists()
    done = torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] + 1
    assert done < 4, "the run finished before it could be killed"
    return fit(recipe, out, resume=True, progress=False, log=lambda *_: None)


def test_resume_accepts_a_moved_data_folder_and_other_run_settings(learn_folder, tmp_path):
    import shutil

    recipe = synthetic_recipe(learn_folder, epochs=2)
    recipe.data.limit = 60
    part = synthetic_recipe(learn_folder, epochs=2)
    part.data.limit = 60
    part.train.max_steps_per_epoch = None
    fit(part, tmp_path / "run", progress=False, log=lambda *_: None)
    ck_path = tmp_path / "run" / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=False)
    ck["epoch"] = 0
    ck["history"] = ck["history"][:1]
    torch.save(ck, ck_path)
    moved = tmp_path / "moved"
    shutil.copytree(learn_folder, moved)
    recipe.data.root = str(moved)
    recipe.train.num_workers = 1
    resumed = fit(recipe, tmp_path / "run", resume=True, progress=False, log=lambda *_: None)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_a_run_stopped_within_an_epoch_resumes_at_its_last_step(learn_folder, tmp_path, monkeypatch):
    from boneage.engine import trainer

    recipe = synthetic_recipe(learn_folder, epochs=3, checkpoint_minutes=1e-9)  # after every step
    recipe.model.options["dropout"] = 0.3  # torch draws that a resume must repeat exactly
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = fit(recipe, tmp_path / "full", progress=False, log=lambda *_: None)
        steps_per_epoch = 180 // 16  # 240 images, a quarter held back, the last part-batch dropped
        real_step, calls = trainer.train_step, []

        def stop_in_epoch_two(*args, **kwargs):
            calls.append(1)
            if len(calls) == steps_per_epoch + 4:
                raise KeyboardInterrupt
            return real_step(*args, **kwargs)

        monkeypatch.setattr(trainer, "train_step", stop_in_epoch_two)
        with pytest.raises(KeyboardInterrupt):
            fit(recipe, tmp_path / "stopped", progress=False, log=lambda *_: None)
        state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=False)
        assert (state["epoch"], state["partial"]["epoch"], state["partial"]["step"]) == (0, 1, 3)
        monkeypatch.setattr(trainer, "train_step", real_step)
        messages = []
        resumed = fit(recipe, tmp_path / "stopped", resume=True, progress=False, log=messages.append)
    finally:
        torch.set_num_threads(threads)
    assert "resuming epoch 2 at step 3" in messages[1]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(resumed.history, full.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_mae"] == pytest.approx(b["val_mae"], rel=1e-5)


def test_resume_refuses_another_recipe_naming_the_keys(learn_folder, tmp_path):
    recipe = synthetic_recipe(learn_folder, epochs=1)
    recipe.data.limit = 60
    fit(recipe, tmp_path / "run", progress=False, log=lambda *_: None)
    other = synthetic_recipe(learn_folder, epochs=1)
    other.data.limit = 60
    other.optim.lr = 0.01
    other.loss.name = "mse"
    with pytest.raises(InputError) as err:
        fit(other, tmp_path / "run", resume=True, progress=False, log=lambda *_: None)
    assert "(differing: loss.name, optim.lr)" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unreadable_jpeg_stops_training_before_any_step_naming_the_file(tmp_path):
    import cv2

    from boneage.data.synthetic import write_synthetic_dataset

    folder = write_synthetic_dataset(tmp_path / "set", 12, size=48, seed=2)
    for png in sorted((folder / "images").glob("*.png")):  # a folder of JPEGs, as rsna-299px
        cv2.imwrite(str(png.with_suffix(".jpg")), cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
        png.unlink()
    broken = sorted((folder / "images").glob("*.jpg"))[4]
    broken.write_bytes(broken.read_bytes()[:200])
    recipe = synthetic_recipe(folder, epochs=1)
    with pytest.raises(InputError) as err:
        fit(recipe, tmp_path / "run", progress=False, log=lambda *_: None)
    assert str(err.value).startswith(f"{broken}: cannot decode image")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
