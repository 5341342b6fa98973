"""Small hand U-Net: shapes, quick training on synthetic hands, file round trip, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.data.synthetic import sample_radiographs
from boneage.errors import ConfigError, InputError
from boneage.models.unet import (
    HandUNet, dice_score, load_hand_unet, predict_hand_mask, save_hand_unet, unet_crop, unet_crop_box,
)
from boneage.segmentation.unet import train_hand_unet
from boneage.transforms import build_transform
from boneage.transforms.classes import UNetCrop


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a small, busy CPU two intra-op threads fight over the cores and make these tiny
    # convolutions ~10x slower than one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained() -> HandUNet:
    return train_hand_unet(n_images=64, size=64, epochs=6, seed=0, base=8, depth=3)


@pytest.fixture(scope="module")
def weights_file(trained, tmp_path_factory) -> str:
    return str(save_hand_unet(trained, tmp_path_factory.mktemp("unet") / "hand.safetensors"))


def _blank_net() -> HandUNet:
    """A net whose every logit is very negative: it never finds a hand."""
    net = HandUNet(base=4, depth=3, input_size=32).eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(-10.0)
    return net


@pytest.mark.parametrize("depth,sizes", [(3, [(32, 32), (64, 96)]), (4, [(48, 80)])])
def test_output_shape(depth, sizes):
    net = HandUNet(base=4, depth=depth).eval()
    for h, w in sizes:
        with torch.no_grad():
            assert net(torch.zeros(2, 1, h, w)).shape == (2, 1, h, w)


def test_input_not_divisible_is_rejected():
    with pytest.raises(ValueError, match="divisible by 8"):
        HandUNet(depth=3)(torch.zeros(1, 1, 60, 64))
    with pytest.raises(ValueError, match="input_size"):
        HandUNet(depth=3, input_size=60)


def test_training_segments_held_out_hands(trained):
    held_out = sample_radiographs(16, size=64, seed=12345)
    scores = [dice_score(predict_hand_mask(trained, s.image), s.mask) for s in held_out]
    assert np.mean(scores) > 0.8, scores


def test_predicted_mask_at_image_resolution(trained):
    s = sample_radiographs(1, size=(96, 80), seed=7)[0]
    mask = predict_hand_mask(trained, s.image)
    assert mask.shape == (96, 80) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}


def test_training_is_deterministic():
    a = train_hand_unet(n_images=8, size=32, epochs=1, seed=3, base=4, depth=3, batch_size=4)
    state_before = torch.get_rng_state()
    b = train_hand_unet(n_images=8, size=32, epochs=1, seed=3, base=4, depth=3, batch_size=4)
    assert torch.equal(state_before, torch.get_rng_state())  # global RNG untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_save_load_round_trip(trained, weights_file):
    loaded = load_hand_unet(weights_file)
    assert loaded.options() == trained.options() == {"in_chans": 1, "base": 8, "depth": 3,
                                                     "input_size": 64}
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(trained(x), loaded(x))


def test_load_missing_or_foreign_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_hand_unet(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_hand_unet(bad)


def test_unet_crop_keeps_the_hand(trained):
    s = sample_radiographs(1, size=128, seed=99, nuisance=False)[0]
    top, bottom, left, right = unet_crop_box(trained, s.image)
    assert s.mask[top:bottom, left:right].sum() >= 0.95 * s.mask.sum()
    assert unet_crop(trained, s.image).shape == (bottom - top, right - left)


def test_empty_mask_falls_back_with_warning():
    net = _blank_net()
    img = sample_radiographs(1, size=64, seed=1)[0].image
    assert unet_crop_box(net, img) is None
    with pytest.warns(UserWarning, match="no hand"):
        out = unet_crop(net, img)
    assert np.array_equal(out, img)


def test_unet_crop_transform_missing_weights(tmp_path):
    missing = str(tmp_path / "missing-unet.safetensors")
    with pytest.raises(ConfigError, match="missing-unet.safetensors"):
        UNetCrop(missing)
    with pytest.raises(ConfigError, match="missing-unet.safetensors"):
        build_transform({"name": "unet_crop", "weights": missing})


def test_unet_crop_transform_loads_once(trained, weights_file):
    t = build_transform({"name": "unet_crop", "weights": weights_file, "margin": 0.0})
    assert t._model is None  # lazy: nothing loaded while building the pipeline
    img = sample_radiographs(1, size=64, seed=5)[0].image
    first = t(img)
    model = t._model
    assert np.array_equal(t(img), first) and t._model is model
    assert np.array_equal(first, unet_crop(trained, img, margin=0.0))
