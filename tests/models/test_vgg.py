"""VGG: Table 1's configurations and Table 2's parameter counts, torchvision equivalence for A, B, D, E and their
batch-norm variants, configuration C's 1x1 layers, A-LRN's normalisation, and golden outputs for A-LRN and C."""

import math

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers.lrn import LocalResponseNorm
from convzoo.models.vgg import CFGS


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return convzoo.create_model(name, **kwargs)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


# torchvision's counts, and ours for the networks it does not ship.
EXACT = {
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "vgg_a_lrn": 132_863_336,
    "vgg_c": 133_638_952,
}
# Table 2 of the paper, in millions.
TABLE2 = {"vgg11": 133, "vgg_a_lrn": 133, "vgg13": 133, "vgg_c": 134, "vgg16": 138, "vgg19": 144}
# Weight layers of Table 1 (convolutions plus three fully connected layers).
DEPTH = {"vgg11": 11, "vgg_a_lrn": 11, "vgg13": 13, "vgg_c": 16, "vgg16": 16, "vgg19": 19}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_parameter_counts(name):
    model = on_meta(name)
    assert convzoo.count_params(model) == EXACT[name]
    plain = name.removesuffix("_bn")
    if plain in TABLE2:
        assert round(convzoo.count_params(model) / 1e6) == TABLE2[plain]
        assert len(convs(model)) + 3 == DEPTH[plain]


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"])
def test_matches_torchvision(name):
    torch.manual_seed(0)
    # Both networks are built on the meta device and given storage, which skips two initialisations of 10^8 weights;
    # the reference then gets random values at trainable scales, biases and batch-norm statistics included.
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
    reference = reference.to_empty(device="cpu").eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.Linear):
                bound = math.sqrt(3.0 / m.in_features)  # unit variance out for unit variance in
                m.weight.uniform_(-bound, bound)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.num_batches_tracked.zero_()
    ours = on_meta(name).to_empty(device="cpu").eval()
    assert list(ours.state_dict()) == list(reference.state_dict())
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_configuration_c_adds_1x1_convolutions_to_the_last_three_blocks():
    c, d = on_meta("vgg_c"), on_meta("vgg16")
    kernels = [conv.kernel_size[0] for conv in convs(c)]
    assert kernels == [3] * 6 + [1] + [3, 3, 1] + [3, 3, 1]
    ones = [conv for conv in convs(c) if conv.kernel_size == (1, 1)]
    assert [(conv.in_channels, conv.out_channels, conv.padding) for conv in ones] == [
        (256, 256, (0, 0)),
        (512, 512, (0, 0)),
        (512, 512, (0, 0)),
    ]
    # Each 1x1 layer is followed by a ReLU and keeps the map size, so C and D have the same maps at every tap.
    index = {id(m): i for i, m in enumerate(c.features)}
    assert all(isinstance(c.features[index[id(conv)] + 1], nn.ReLU) for conv in ones)
    x = torch.empty(1, 3, 64, 64, device="meta")
    assert [t.shape for t in c.forward_intermediates(x)] == [t.shape for t in d.forward_intermediates(x)]
    # D's 3x3 kernels in their place cost eight more weights per connection: 8 x (256^2 + 2 x 512^2).
    assert convzoo.count_params(d) - convzoo.count_params(c) == 8 * (256**2 + 2 * 512**2)


def test_configuration_a_lrn_normalises_after_the_first_layer():
    torch.manual_seed(0)
    model = convzoo.create_model("vgg_a_lrn", hidden=(8, 8)).eval()
    assert [type(m).__name__ for m in model.features[:4]] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert sum(isinstance(m, LocalResponseNorm) for m in model.modules()) == 1
    lrn = model.features[2]
    # Krizhevsky et al.'s constants, as section 2.1 prescribes.
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    x = torch.randn(1, 3, 32, 32) * 50
    with torch.no_grad():
        a = torch.relu(model.features[0](x))
        torch.testing.assert_close(model.features[:3](x), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(a))
        assert not torch.allclose(model.features[:3](x), a)


def test_feature_taps_min_input_and_head():
    model = on_meta("vgg16")
    assert [(f.num_chs, f.reduction) for f in model.feature_info] == [
        (64, 1),
        (128, 2),
        (256, 4),
        (512, 8),
        (512, 16),
        (512, 32),
    ]
    # The last ReLU of each block, before its max-pool, and pool5 last.
    assert [f.module for f in model.feature_info] == [f"features.{i}" for i in (3, 8, 15, 22, 29, 30)]
    # Five 2x2 max-pools: 32x32 is the smallest input that leaves pool5 a pixel.
    assert model.min_input_size == 32
    with pytest.raises(RuntimeError):
        model.features(torch.empty(1, 3, 31, 31, device="meta"))
    with pytest.raises(ValueError, match=r"vgg16 needs images of at least 32x32 .*got 31x40"):
        model(torch.empty(1, 3, 31, 40, device="meta"))
    assert model.num_features == 512 and model.get_classifier() is model.classifier[6]
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]


def test_reset_classifier_keeps_fc6_and_fc7():
    torch.manual_seed(0)
    # A small configuration: the head logic is the same for every table row.
    model = convzoo.create_model(
        "vgg_c", layers=(16, "M", (32, 1), "M"), batch_norm=True, hidden=(8, 8), num_classes=10
    )
    model.eval()
    fc6 = model.classifier[0]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.reset_classifier(4)
        assert model.classifier[0] is fc6 and model(x).shape == (2, 4)
        features = model.forward_features(x)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), features.mean((2, 3)))
        model.reset_classifier(6)
        assert model.classifier[0] is not fc6 and model(x).shape == (2, 6)
    # Batch-norm statistics start at mean 0, variance 1 (the model is built on the meta device, then allocated).
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)


def test_configurations_are_the_tables_data():
    assert CFGS["A-LRN"] == (64, "LRN", *CFGS["A"][1:])
    # Batch normalisation for any configuration: C's 13 convolutions gain 2 x their widths in parameters.
    assert convzoo.count_params(on_meta("vgg_c", batch_norm=True)) == EXACT["vgg_c"] + 2 * sum(
        conv.out_channels for conv in convs(on_meta("vgg_c"))
    )
    model = on_meta("vgg11", layers=(32, "M", (64, 1), "M"), hidden=(100,), batch_norm=True)
    assert [type(m).__name__ for m in model.features] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    assert model.min_input_size == 4 and model.classifier[0].in_features == 64 * 49


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"layers": (64, "X")}, r"each entry of layers is 'M', 'LRN', a filter count or \(filters, odd kernel size\)"),
        ({"layers": ((64, 2), "M")}, r"each entry of layers .*got \(64, 2\)"),
        ({"layers": ("M", "M")}, "layers holds no convolution"),
        ({"hidden": ()}, "hidden needs one or more positive widths"),
        ({"drop_rate": -0.1}, r"drop_rate must lie in \[0, 1\)"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"vgg13: {message}"):
        on_meta("vgg13", **overrides)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="vgg16_bn got unexpected keyword argument.*'dropout'.*accepted keys"):
        on_meta("vgg16_bn", dropout=0.2)


def test_cards_cite_table_3():
    expected = {
        "vgg11": (29.6, 10.4),
        "vgg_a_lrn": (29.7, 10.5),
        "vgg13": (28.7, 9.9),
        "vgg_c": (28.1, 9.4),
        "vgg16": (27.0, 8.8),
        "vgg19": (27.3, 9.0),
    }
    for name, (top1, top5) in expected.items():
        card = convzoo.get_model_card(name)
        assert [(r.metric, r.value, r.source) for r in card.reported] == [
            ("top-1 error", top1, "Table 3"),
            ("top-5 error", top5, "Table 3"),
        ]
        assert card.paper.venue == "ICLR" and card.paper.year == 2015
    assert convzoo.get_model_card("vgg16_bn").reported == ()


@pytest.mark.parametrize("name", ["vgg_a_lrn", "vgg_c"])
def test_golden_outputs(name, golden):
    torch.manual_seed(0)
    model = convzoo.create_model(name, num_classes=10).eval()
    # Mean-subtracted RGB on the 0-255 scale, the paper's only preprocessing (section 2.1): large enough for A-LRN's
    # normalisation to act (on unit-variance inputs it is nearly a constant factor).
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 100
    with torch.no_grad():
        features = model.forward_features(x)
        outputs = {"logits": model.forward_head(features), "pooled": features.mean((2, 3))[:, :16]}
    golden(name, outputs)
