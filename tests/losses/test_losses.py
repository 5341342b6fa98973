import pytest
import torch

from boneage.errors import ConfigError
from boneage.losses import create_loss, list_losses


def test_mse_and_mae_hand_values():
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 5.0])
    assert create_loss("mse")(pred, target).item() == pytest.approx(5 / 3)
    assert create_loss("mae")(pred, target).item() == pytest.approx(1.0)


def test_unknown_loss_lists_names():
    assert {"mse", "mae"} <= set(list_losses())
    with pytest.raises(ConfigError, match="unknown loss 'msee'.*did you mean 'mse'.*valid names: gaussian_mse, mae, mse"):
        create_loss("msee")


def gauss(c, sigma=400.0, beta=100.0):
    import math
    return beta * math.exp(-c * c / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))


def test_gaussian_weights_hand_computed():
    import numpy as np

    loss = create_loss("gaussian_mse", sigma=400, beta=100, bin_width=12)
    # ages in years 1, 1, 1, 2 and 4 (bins 1, 2, 4; bin 3 is empty inside the range)
    loss.prepare(np.array([12, 15, 20, 30, 50.0]))
    w = loss.weights(torch.tensor([13.0, 25.0, 40.0, 59.0]))
    expected = [1 + gauss(3), 1 + gauss(1), 1 + gauss(0), 1 + gauss(1)]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    # c = 0 (the empty bin) gives the largest weight, 1 + beta / (sigma sqrt(2 pi)), by hand:
    assert w[2].item() == pytest.approx(1 + 0.0997356, rel=1e-5)
    pred, target = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    value = loss(pred, target, torch.tensor([13.0, 40.0]))
    assert value.item() == pytest.approx((1 + gauss(3)) / 2, rel=1e-6)


def test_gaussian_weights_months_bins_and_errors():
    import numpy as np

    loss = create_loss("gaussian_mse", bin_width=1, sigma=1.0, beta=1.0)
    loss.prepare(np.array([10.0, 10.5, 11.0]))
    assert loss.weights(torch.tensor([10.2, 11.9])).tolist() == pytest.approx([1 + gauss(2, 1, 1), 1 + gauss(1, 1, 1)], rel=1e-6)
    with pytest.raises(ValueError, match="age 30 months is outside the range seen in training"):
        loss.weights(torch.tensor([30.0]))
    with pytest.raises(ConfigError, match="sigma must be > 0, got 0"):
        create_loss("gaussian_mse", sigma=0)
