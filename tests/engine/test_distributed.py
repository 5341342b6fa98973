"""Training over several processes: torchrun + DistributedDataParallel on gloo (CPU).

Two processes train a recipe whose network uses GroupNorm, which does not depend on how a
batch is split, so the two-process run must follow the one-process run up to rounding: the
samplers' strided shares make each step's items the same, DDP averages the two half-batch
gradients into the full-batch one, and ``train.batch_size`` stays the global batch.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from boneage.engine import fit
from boneage.engine.sampling import make_sampler
from boneage.errors import ConfigError
from boneage.inference import read_model_metadata
from synthetic_runs import synthetic_recipe

QUIET = {"progress": False, "log": lambda *_: None}


def ddp_recipe(root, **train):
    """The synthetic recipe with a batch-independent network (GroupNorm; lr 0.001, at which
    it learns) and the shuffle sampler, whose shares the processes split; 6 epochs (66 steps),
    after which float rounding would grow into the result (see the comparison test). (The
    balanced sampler's shares are tested item by item below; with it, the small age bins
    repeat their images and the two runs' rounding grows 100-fold per epoch: 17 % apart at
    epoch 6, too fast to compare whole runs.)"""
    recipe = synthetic_recipe(root, **{"sampler": "shuffle", "epochs": 6, **train})
    recipe.model.options["norm"] = "group"
    recipe.optim.lr = 0.001
    return recipe


def torchrun(recipe, out, *args, cwd, nproc=2):
    """``python -m torch.distributed.run --nproc_per_node N -m boneage train``, one thread per
    process (as the one-process reference runs); temporary files go under ``cwd``."""
    cfg = cwd / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe.to_dict()))
    tmp = cwd / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", str(nproc), "-m", "boneage", "train", str(cfg),
                           "--out", str(out), "--quiet", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_thread_fit(recipe, out, **kwargs):
    """``fit`` on one thread: float sums split across threads round differently, and the
    torchrun processes use one each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(recipe, out, **QUIET, **kwargs)
    finally:
        torch.set_num_threads(threads)


def metrics(out) -> list[dict]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(out / "metrics.csv"))]


@pytest.fixture(scope="module")
def one_process(learn_folder, tmp_path_factory):
    return one_thread_fit(ddp_recipe(learn_folder), tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def two_processes(learn_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    proc = torchrun(ddp_recipe(learn_folder), root / "run", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_two_processes_write_one_set_of_files_and_report_once(two_processes):
    root, proc = two_processes
    out = root / "run"
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".csv", ".json")) == [
        "checkpoint.pt", "metrics.csv", "val_predictions.csv", "val_summary.json"]
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3, 4, 5, 6]
    # Only the main process logs: each epoch's line once, and the split is stated.
    lines = proc.stderr.splitlines()
    assert sum(line.startswith("epoch 6/6:") for line in lines) == 1, proc.stderr
    assert "device cpu x 2 processes (8 images of each batch per process)" in proc.stderr
    _, info = read_model_metadata(out / "model.safetensors")
    assert info["processes"] == 2 and info["n_train"] == 180 and info["n_val"] == 60
    # The main process's shared preprocessing cache is gone once every process mapped it.
    assert list((root / "tmp").glob("boneage-cache-*")) == []


def test_two_processes_follow_the_one_process_run(one_process, two_processes):
    root, _ = two_processes
    one, two = one_process.history, metrics(root / "run")
    # The runs differ only by the order of float sums (two half-batch gradients averaged by
    # DDP instead of one full-batch mean, ~1e-7), so the first epoch agrees to 1e-4; a wrong
    # split (a process seeing the whole epoch, or the per-process batch taken as the global
    # one) differs there at once. How fast training amplifies the rounding depends on the CPU's
    # kernels: 1.3e-5 at epoch 4 on one machine, 4e-4 at epoch 3 on another, so epochs 2-4 are
    # held to 1e-2.
    for epoch, (a, b) in enumerate(zip(two[:4], one[:4]), start=1):
        rel = 1e-4 if epoch == 1 else 1e-2
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel), epoch
        assert a["val_mae"] == pytest.approx(b["val_mae"], rel=rel), epoch
    # Then training amplifies that rounding chaotically (0.6 % at epoch 6 on one machine, a
    # best MAE of 25 against 46 months on another), so the end is not compared between the
    # runs; each must have learned on its own.
    best_two = min(r["val_mae"] for r in two)
    summary = json.loads((root / "run" / "val_summary.json").read_text())
    baseline = float(np.mean(np.abs(np.array([float(r["boneage"]) for r in csv.DictReader(
        open(root / "run" / "val_predictions.csv"))]) - read_model_metadata(root / "run" / "model.safetensors")[0].target.mean)))
    # Both runs learned past predicting the mean. How far 6 epochs get is the CPU's rounding
    # again: 25-46 months on two machines, 59 on a CI machine, against 64.5 for the mean; DDP's
    # correctness is what the epoch-by-epoch agreement above shows.
    assert summary["mae"] == pytest.approx(best_two, abs=1e-3)
    assert best_two < baseline, (best_two, baseline)
    assert one_process.best_val_mae < baseline, (one_process.best_val_mae, baseline)


@pytest.mark.slow
def test_torchrun_resumes_a_checkpoint(learn_folder, one_process, tmp_path):
    """Two processes resume a run interrupted after 4 epochs and end where the
    uninterrupted one-process run ended."""
    part = tmp_path / "part"
    one_thread_fit(ddp_recipe(learn_folder, epochs=4), part)
    ck = torch.load(part / "checkpoint.pt", weights_only=False)
    ck["recipe"]["train"]["epochs"] = 6  # as if the 6-epoch run had been killed after epoch 4
    torch.save(ck, part / "checkpoint.pt")
    proc = torchrun(ddp_recipe(learn_folder), part, "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming after epoch 4" in proc.stderr
    rows = metrics(part)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    # Epochs 1-4 are the checkpoint's; 5-6 trained by two processes from its weights,
    # optimiser and sampler state (tolerance as in the comparison above).
    for got, want in zip(rows, one_process.history):
        assert got["val_mae"] == pytest.approx(want["val_mae"], rel=0.03)


@pytest.mark.slow
def test_more_processes_than_training_images_fail_in_one_line_under_torchrun(learn_folder, tmp_path):
    recipe = ddp_recipe(learn_folder)
    recipe.data.limit, recipe.data.val_fraction = 2, 0.5  # one training image for two processes
    proc = torchrun(recipe, tmp_path / "run", cwd=tmp_path)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("boneage:")]
    # Each process prints the same line (torchrun then adds its own summary of the failure).
    assert set(ours) == {"boneage: error: 2 processes (torchrun --nproc_per_node) but only 1 training "
                         "image: every process needs at least one; start at most 1"}, proc.stderr
    assert "boneage/engine" not in proc.stderr  # no traceback from our code
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("world, overrides, message", [
    ("3", ["data.limit=4", "data.val_fraction=0.5"],
     "boneage: error: 3 processes (torchrun --nproc_per_node) but only 2 training images: "
     "every process needs at least one; start at most 2"),
    ("3", [], "boneage: error: train.batch_size 16 does not split evenly over 3 processes (it is the "
              "global batch: each process takes batch_size / 3); use a multiple of 3"),
    ("2", [], "boneage: error: WORLD_SIZE=2 says this is one of 2 processes, but MASTER_ADDR and "
              "MASTER_PORT are not set: start them with torchrun --nproc_per_node N -m boneage train ..."),
], ids=["fewer-images-than-processes", "batch-not-divisible", "no-rendezvous-address"])
def test_a_process_count_the_run_cannot_use_is_one_line(cli, learn_folder, tmp_path, monkeypatch,
                                                        world, overrides, message):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(ddp_recipe(learn_folder).to_dict()))
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", world)  # what torchrun sets in the process of rank 0
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code, out, err = cli("train", cfg, *overrides, "--out", tmp_path / "run", "--quiet")
    assert (code, out, err) == (2, "", message + "\n")
    assert not (tmp_path / "run").exists()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("name", ["balanced", "shuffle"])
@pytest.mark.parametrize("n, world", [(45, 2), (46, 2), (46, 3)])
def test_sampler_shares_split_the_one_process_draw(name, n, world):
    ages = np.linspace(0.0, 228.0, n) ** 1.5 / 228.0 ** 0.5  # skewed: balancing matters
    whole = list(make_sampler(name, n, 7, 3, ages, world=(0, 1)))
    shares = [list(make_sampler(name, n, 7, 3, ages, world=(r, world))) for r in range(world)]
    per = -(-n // world)
    # Equal length (DDP needs every process to take the same number of steps)...
    assert [len(s) for s in shares] == [per] * world
    assert [len(make_sampler(name, n, 7, 3, ages, world=(r, world))) for r in range(world)] == [per] * world
    # ...disjoint positions of one draw: interleaved, the shares are the one-process draw,
    # wrapped round to fill the last step.
    interleaved = [shares[r][k] for k in range(per) for r in range(world)]
    assert interleaved == (whole * 2)[:per * world]
    if name == "shuffle":  # every item once, apart from the wrapped padding
        assert sorted(interleaved[:n]) == list(range(n))
    assert len(whole) == n


def test_a_per_sex_model_trains_under_torchrun_when_a_share_holds_one_sex(learn_folder, tmp_path):
    # One image per process per step: every step leaves one of the two networks without a
    # gradient on at least one process, which plain DDP refuses at the next step.
    recipe = synthetic_recipe(learn_folder, epochs=1, batch_size=2, max_steps_per_epoch=6)
    recipe.model.name, recipe.model.options = "per_sex", {"model": "small_cnn", "width": 4, "stages": 2}
    proc = torchrun(recipe, tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 0, [line for line in proc.stderr.splitlines() if "rror" in line][:5]
    path = tmp_path / "run" / "model.safetensors"
    assert read_model_metadata(path)[1]["processes"] == 2
    # The two networks, which start as copies, learned apart through the routing.
    from safetensors.torch import load_file

    weights = load_file(str(path))
    male = {k[len("male."):]: v for k, v in weights.items() if k.startswith("male.")}
    female = {k[len("female."):]: v for k, v in weights.items() if k.startswith("female.")}
    assert male.keys() == female.keys() and male
    assert any(not torch.equal(male[k], female[k]) for k in male)
