"""Run settings for speed: mixed precision (bf16 / fp16 with a checkpointed scaler),
channels-last, and the preprocessing cache processes share."""

import numpy as np
import pytest
import torch
import yaml

from boneage.config import load_recipe
from boneage.engine import fit
from boneage.engine.precision import amp_dtype
from boneage.engine.sampling import make_sampler
from boneage.engine.trainer import make_loader, prepare, train_step
from boneage.errors import ConfigError
from boneage.inference.loader import load_predictor
from synthetic_runs import synthetic_recipe

QUIET = {"progress": False, "log": lambda *_: None}
CPU = torch.device("cpu")


def small(root, **train):
    """An epoch of two steps (36 training images, batches of 16): enough to exercise a code
    path, quick on a CPU."""
    recipe = synthetic_recipe(root, **{"epochs": 1, **train})
    recipe.data.limit = 48
    return recipe


def test_bf16_autocast_on_cpu_trains_a_step(learn_folder):
    from boneage.data.labels import load_samples

    recipe = small(learn_folder, amp="bf16", channels_last=True)
    samples = load_samples(learn_folder, limit=40)
    task, recipe, networks, optimisation = prepare(recipe, samples, np.arange(32), np.arange(32, 40), CPU)
    model = networks["model"]
    first_conv = model.backbone.features[0]
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    first_conv.register_forward_hook(lambda m, i, o: seen.append((o.dtype, i[0].is_contiguous(
        memory_format=torch.channels_last))))
    before = first_conv.weight.detach().clone()
    loader = make_loader(task.train_dataset(), make_sampler("shuffle", 32, 0, 0), 16, 0, CPU)
    model.train()
    losses = train_step(task, networks, optimisation, next(iter(loader)))
    # The convolution ran in bf16 on a channels-last input; the weights stay fp32 and moved.
    assert seen == [(torch.bfloat16, True)]
    assert first_conv.weight.dtype is torch.float32
    assert not torch.equal(first_conv.weight, before)
    assert set(losses) == {"model"} and np.isfinite(losses["model"]) and losses["model"] > 0
    assert not optimisation.scaler.is_enabled()  # bf16 has fp32's range: nothing to scale


def test_amp_setting_resolves_per_device():
    assert amp_dtype(False, CPU) is None
    assert amp_dtype(True, CPU) is None  # the CPU's best: full precision unless asked for bf16
    assert amp_dtype("bf16", CPU) is torch.bfloat16
    assert amp_dtype("fp16", CPU) is torch.float16
    with pytest.raises(ConfigError, match="train.amp must be false, true, bf16 or fp16, got 'fp8'"):
        amp_dtype("fp8", CPU)


def test_amp_values_are_checked_in_one_line_and_are_run_settings(learn_folder, tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(synthetic_recipe(learn_folder).to_dict()))
    with pytest.raises(ConfigError) as err:
        load_recipe(cfg, ["train.amp=fp32"])
    assert str(err.value) == (f"{cfg}: recipe.train.amp: must be false, true (the device's best choice), "
                              "bf16 or fp16 (got 'fp32')")
    plain = load_recipe(cfg)
    faster = load_recipe(cfg, ["train.amp=bf16", "train.channels_last=true", "train.num_workers=2"])
    assert (faster.train.amp, faster.train.channels_last, plain.train.amp) == ("bf16", True, False)
    # Resume accepts other run settings: they are not part of the method.
    assert faster.method_dict() == plain.method_dict()


def test_fp16_scaler_state_is_checkpointed_and_restored_on_resume(learn_folder, tmp_path):
    run = tmp_path / "run"
    first = fit(small(learn_folder, amp="fp16"), run, **QUIET)
    assert np.isfinite(first.history[0]["train_loss"])
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    scaler = ck["optimisation"]["scaler"]
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 2  # two steps, no overflow
    # A scale and step count no fresh scaler has: the resumed run must carry them on.
    scaler["scale"], scaler["_growth_tracker"] = 1024.0, 7
    ck["recipe"]["train"]["epochs"] = 2
    torch.save(ck, run / "checkpoint.pt")
    resumed = fit(small(learn_folder, amp="fp16", epochs=2), run, resume=True, **QUIET)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert np.isfinite(resumed.history[1]["train_loss"])
    after = torch.load(run / "checkpoint.pt", weights_only=False)["optimisation"]["scaler"]
    assert (after["scale"], after["_growth_tracker"]) == (1024.0, 9)


def test_channels_last_trains_like_the_default_layout(learn_folder, tmp_path):
    plain = fit(small(learn_folder), tmp_path / "plain", **QUIET)
    nhwc = fit(small(learn_folder, channels_last=True), tmp_path / "nhwc", **QUIET)
    # Same arithmetic in another memory order: equal up to float rounding.
    assert nhwc.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=1e-4)
    assert nhwc.best_val_mae == pytest.approx(plain.best_val_mae, rel=1e-4)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    a = load_predictor(plain.model_path).predict(image, "F").bone_age_months
    b = load_predictor(nhwc.model_path).predict(image, "F").bone_age_months
    assert b == pytest.approx(a, abs=0.01)


def test_preprocessed_cache_round_trips_through_a_memory_mapped_file(learn_folder, tmp_path):
    from boneage.data.datasets import PreprocessedCache
    from boneage.data.labels import load_samples

    samples = load_samples(learn_folder, limit=5)
    built = PreprocessedCache(samples, synthetic_recipe(learn_folder), workers=1)
    built.save(tmp_path)
    loaded = PreprocessedCache.load(tmp_path, samples)
    assert len(loaded) == 5 and [s.id for s in loaded.samples] == [s.id for s in samples]
    for k in range(5):
        assert isinstance(loaded.images[k], np.memmap)  # shared pages, not a private copy
        assert loaded.images[k].shape == (48, 48)
        np.testing.assert_array_equal(loaded.image(k), built.image(k))
    with pytest.raises(ValueError, match="holds 5 images for 4 samples"):
        PreprocessedCache.load(tmp_path, samples[:4])
