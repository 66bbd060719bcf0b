"""Network in Network: the authors' CIFAR-10 model layer by layer, global average pooling of class maps in place of
fully connected layers, the classifier reset, the true minimum input, and golden outputs."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.models.nin import MlpConv


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    model = convzoo.create_model("nin")
    blocks = [m for m in model.features if isinstance(m, MlpConv)]
    # conv1 + cccp1 + cccp2, conv2 + cccp3 + cccp4, conv3 + cccp5, and cccp6 (the classifier).
    assert [n_params(b) for b in blocks] == [
        (3 * 25 + 1) * 192 + (192 + 1) * 160 + (160 + 1) * 96,
        (96 * 25 + 1) * 192 + 2 * (192 + 1) * 192,
        (192 * 9 + 1) * 192 + (192 + 1) * 192,
    ]
    assert n_params(model.final_conv) == 193 * 10
    assert convzoo.count_params(model) == 966_986
    assert convzoo.count_params(convzoo.create_model("nin", num_classes=100)) == 966_986 - 1930 + 19_300
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # no fully connected layer at all


def test_layers_of_the_released_cifar10_model():
    model = convzoo.create_model("nin")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.padding[0], c.out_channels) for c in convs] == [
        (5, 2, 192),
        (1, 0, 160),
        (1, 0, 96),
        (5, 2, 192),
        (1, 0, 192),
        (1, 0, 192),
        (3, 1, 192),
        (1, 0, 192),
        (1, 0, 10),
    ]
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["MlpConv", "MaxPool2d", "Dropout", "MlpConv", "MaxPool2d", "Dropout", "MlpConv"]
    assert {m.p for m in model.features if isinstance(m, nn.Dropout)} == {0.5}
    # Every convolution is followed by a ReLU, the class maps included.
    for block in (m for m in model.features if isinstance(m, MlpConv)):
        assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU] * (len(block) // 2)
    # The released weights start from N(0, 0.05), the biases from 0.
    assert abs(convs[3].weight.std().item() - 0.05) < 2e-3 and all(c.bias.abs().sum() == 0 for c in convs)


def test_maps_shrink_32_16_8_and_the_logits_are_class_map_averages():
    torch.manual_seed(0)
    model = convzoo.create_model("nin").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        assert [tuple(m.shape[1:]) for m in maps] == [(96, 32, 32), (192, 16, 16), (192, 8, 8)]
        class_maps = model.class_maps(x)
        assert class_maps.shape == (2, 10, 8, 8) and (class_maps >= 0).all()
        torch.testing.assert_close(model(x), class_maps.mean((2, 3)))
    assert [(f.num_chs, f.reduction) for f in model.feature_info] == [(96, 1), (192, 2), (192, 4)]


def test_min_input_size_is_the_true_minimum():
    model = convzoo.create_model("nin").eval()
    # Two ceil-mode 3x3/2 pools: 4 -> 2 -> 1; from 3 the second pool has no window left.
    assert model.min_input_size == 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 4)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            model.features(torch.randn(1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"nin needs images of at least 4x4 .*got 3x3"):
        model(torch.randn(1, 3, 3, 3))


def test_reset_classifier_replaces_the_class_map_convolution():
    torch.manual_seed(0)
    model = convzoo.create_model("nin").eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.get_classifier() is model.final_conv and model.num_features == 192
    with torch.no_grad():
        features = model.forward_features(x)
        model.reset_classifier(100)
        assert isinstance(model.final_conv, nn.Conv2d) and model.final_conv.out_channels == 100
        assert model.final_conv.kernel_size == (1, 1) and model(x).shape == (2, 100)
        # Without a classifier: the global average of the 192 maps the class-map convolution reads.
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), features.mean((2, 3)))
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean((2, 3)))
        with pytest.raises(RuntimeError, match="nin has no classifier"):
            model.class_maps(x)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"blocks": ()}, "blocks holds no mlpconv layer"),
        ({"blocks": ((4, (192,)),)}, r"mlpconv layer 1 needs an odd kernel size"),
        ({"blocks": ((5, (192, 0)),)}, r"mlpconv layer 1 needs .*one or more positive widths"),
        ({"drop_rate": 1.0}, r"drop_rate must lie in \[0, 1\)"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"nin: {message}"):
        convzoo.create_model("nin", **overrides)
    with pytest.raises(TypeError, match="nin got unexpected keyword argument.*'block'.*did you mean 'blocks'"):
        convzoo.create_model("nin", block=((5, (96,)),))


def test_card():
    card = convzoo.get_model_card("nin")
    assert card.input_size == (3, 32, 32) and card.num_classes == 10 and card.paper.venue == "ICLR"
    assert [(r.dataset, r.value, r.source) for r in card.reported] == [
        ("CIFAR-10", 10.41, "Table 1"),
        ("CIFAR-10", 8.81, "Table 1"),
        ("CIFAR-100", 35.68, "Table 2"),
    ]


def test_golden_outputs(golden):
    torch.manual_seed(0)
    model = convzoo.create_model("nin").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_features(x)
        outputs = {"logits": model.forward_head(features), "pooled": features.mean((2, 3))[:, :16]}
    golden("nin", outputs)
