"""The compression module, SE-ResNet placement and the models of He & Jiang (2021)."""

import pytest
import torch
import torch.nn as nn
from timm.layers.squeeze_excite import SEModule

from boneage.models import SexFusionHead, create_model
from boneage.models.compression import CompressionModule, se_resnet

COMPRESSED = ["compressed_seresnet18", "compressed_seresnet34", "compressed_seresnet50",
              "compressed_resnet18"]
NEW_MODELS = ["seresnet18", "seresnet34", "seresnet50", "vgg16", *COMPRESSED]


@pytest.mark.parametrize("in_size, ratio, out_chans, expected", [
    (64, 4, 3, 16), (128, 2, 3, 64), (96, 4, 3, 24), (32, 8, 5, 4), (4, 4, 1, 1)])
def test_compression_output_shape(in_size, ratio, out_chans, expected):
    m = CompressionModule(in_size=in_size, ratio=ratio, in_chans=1, out_chans=out_chans, width=4).eval()
    y = m(torch.randn(2, 1, in_size, in_size))
    assert y.shape == (2, out_chans, expected, expected)
    assert m.out_size == expected


@pytest.mark.parametrize("in_size, ratio", [(100, 8), (90, 4), (30, 4)])
def test_compression_ratio_must_divide_input(in_size, ratio):
    with pytest.raises(ValueError, match=f"^compression ratio {ratio} does not divide input size {in_size}$"):
        CompressionModule(in_size=in_size, ratio=ratio)


@pytest.mark.parametrize("ratio", [1, 3, 6, 0, -4, 2.0])
def test_compression_ratio_must_be_power_of_two(ratio):
    with pytest.raises(ValueError, match="power of two >= 2"):
        CompressionModule(in_size=96, ratio=ratio)


def test_compression_rejects_wrong_input_size():
    m = CompressionModule(in_size=64, ratio=4, width=4)
    with pytest.raises(ValueError, match=r"built for 64x64 input but got 96x96; "):
        m(torch.randn(1, 1, 96, 96))
    with pytest.raises(ValueError, match=r"built for 64x64 input but got 66x66, and compression ratio 4 "
                                         r"does not divide it"):
        m(torch.randn(1, 1, 66, 66))
    with pytest.raises(ValueError, match=r"expects \(B, 1, H, W\) input"):
        m(torch.randn(1, 3, 64, 64))


def test_compression_fuses_shallow_and_upsampled_features():
    m = CompressionModule(in_size=32, ratio=4, width=4).eval()
    seen = {}
    m.fuse.register_forward_hook(lambda mod, inp, out: seen.__setitem__("fuse_in", inp[0].shape))
    m(torch.randn(1, 1, 32, 32))
    # target-size (16 ch) + upsampled deep (16 ch) + pooled stem (4 ch), all at 8x8
    assert seen["fuse_in"] == (1, 16 + 16 + 4, 8, 8)


@pytest.mark.parametrize("depth, layer", [(18, "layer1"), (18, "layer2"), (50, "layer1"), (50, "layer3")])
def test_se_sits_before_the_residual_sum(depth, layer, monkeypatch):
    torch.manual_seed(0)
    net = se_resnet(depth).eval()
    blk = getattr(net, layer)[0]
    chans = blk.conv1.in_channels
    x = torch.randn(1, chans, 8, 8)
    shortcut = blk.downsample(x) if blk.downsample is not None else x
    # A zero SE gate kills the residual branch: only the shortcut can reach the sum.
    monkeypatch.setattr(blk.se, "forward", lambda t: torch.zeros_like(t))
    with torch.no_grad():
        torch.testing.assert_close(blk(x.clone()), torch.relu(shortcut))


@pytest.mark.parametrize("name, n_se", [("seresnet18", 8), ("seresnet34", 16), ("seresnet50", 16),
                                        ("compressed_seresnet18", 8), ("compressed_resnet18", 0),
                                        ("vgg16", 0)])
def test_se_blocks_are_where_expected(name, n_se):
    opts = {"in_size": 64} if name.startswith("compressed") else {}
    model = create_model(name, **opts)
    assert sum(isinstance(m, SEModule) for m in model.modules()) == n_se
    assert any(isinstance(m, CompressionModule) for m in model.modules()) == name.startswith("compressed")


@pytest.mark.parametrize("name", ["seresnet18", "compressed_seresnet18", "vgg16"])
def test_paper_head_defaults(name):
    opts = {"in_size": 64} if name in COMPRESSED else {}
    head = create_model(name, **opts).head
    assert isinstance(head, SexFusionHead)
    assert head.sex_units == 32
    assert [m.out_features for m in head.hidden if isinstance(m, nn.Linear)] == [512, 256]
    assert head.output_dropout.p == 0.5 and head.dropout.p == 0.0


def test_compressed_model_options_and_feature_map():
    model = create_model("compressed_seresnet18", in_size=128, ratio=2, compress_width=4,
                         compress_chans=1, hidden=[64]).eval()
    comp = model.backbone.compression
    assert (comp.in_size, comp.ratio, comp.out_chans) == (128, 2, 1)
    assert model.backbone.body.conv1.in_channels == 1
    fmap = model.forward_features(torch.randn(1, 1, 128, 128))
    assert fmap.shape == (1, model.num_features, 2, 2)  # 128 / 2 / 32
    with pytest.raises(ValueError, match="built for 128x128 input but got 64x64"):
        model(torch.randn(1, 1, 64, 64), torch.ones(1))


def test_output_dropout_head_drops_only_before_the_output():
    torch.manual_seed(0)
    head = SexFusionHead(16, sex_units=4, hidden=(32,), output_dropout=0.5)
    plain = SexFusionHead(16, sex_units=4, hidden=(32,), dropout=0.5)
    assert list(head.state_dict()) == list(plain.state_dict())
    seen = {}
    head.hidden[0].register_forward_hook(lambda m, i, o: seen.__setitem__("first", i[0]))
    head.out.register_forward_hook(lambda m, i, o: seen.__setitem__("out", i[0]))
    f = torch.rand(64, 16) + 1.0
    head.train()
    head(f, torch.ones(64))
    torch.testing.assert_close(seen["first"][:, :16], f)  # image features untouched
    with torch.no_grad():
        pre = head.hidden(torch.cat([f, head.sex_fc(torch.ones(64, 1))], dim=1))
    kept = seen["out"] != 0
    torch.testing.assert_close(seen["out"][kept], 2 * pre[kept])  # inverted dropout, p = 0.5
    dropped = (~kept & (pre > 0)).sum().item() / (pre > 0).sum().item()
    assert 0.35 < dropped < 0.65
    head.eval()
    assert torch.equal(head(f, torch.ones(64)), head(f, torch.ones(64)))
    with pytest.raises(ValueError, match="output_dropout must be in"):
        SexFusionHead(16, output_dropout=1.0)


def test_vgg16_at_128_uses_features_only():
    torch.manual_seed(0)
    model = create_model("vgg16").eval()
    assert not any("pre_logits" in n for n, _ in model.named_parameters())
    x = torch.randn(2, 1, 128, 128)
    fmap = model.forward_features(x)
    assert fmap.shape == (2, 512, 4, 4) and model.num_features == 512
    out = model(x, torch.tensor([1.0, 0.0]))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_paper_models_are_registered():
    from boneage.models import list_models

    assert set(NEW_MODELS) <= set(list_models())
