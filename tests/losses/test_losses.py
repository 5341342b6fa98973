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
    with pytest.raises(ConfigError, match="unknown loss 'msee'.*did you mean 'mse'.*valid names: mae, mse"):
        create_loss("msee")
