"""Highway networks: the authors' 19-layer CIFAR model and its parameter count, the gate's closed and open limits,
the negative gate bias, a 60-layer stack whose signal and gradient survive where its plain twin's vanish, golden
outputs."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.layers.highway import HighwayConv2d
from convzoo.models.highway import PlainConv2d


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model(name, **kwargs))


def test_parameter_count_equals_the_authors_training_log():
    # examples/highways/cifar10-19layers/sample.log: "The network has total 2265928 trainable parameters." (the file
    # gives its classifier 100 outputs); Table 2: "~2.3M".
    assert n_params("highway_cifar_19", num_classes=100) == 2_265_928
    assert n_params("highway_cifar_19") == 2_265_928 - 90 * 101
    assert round(n_params("highway_cifar_19") / 1e6, 1) == 2.3


def test_nineteen_layers_as_the_authors_model():
    model = convzoo.create_model("highway_cifar_19")
    highway = model.highway_layers()
    plain = [m for m in model.modules() if isinstance(m, PlainConv2d)]
    assert [len(getattr(model, f"stage{i}")) for i in (1, 2, 3)] == [5, 8, 8]  # (pool, dropout,) plain, 4/5/5 highway
    assert len(highway) == 14 and len(plain) == 3
    assert [p.conv.out_channels for p in plain] == [32, 80, 128]
    assert (model.head_conv.kernel_size, model.head_conv.out_channels) == ((1, 1), 100)
    assert len(highway) + len(plain) + 1 + 1 == 19  # + the 1x1 convolution and the classifier
    assert all(h.transform.kernel_size == h.gate.kernel_size == (3, 3) for h in highway)
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.2] * 4  # input, after both pools, before the classifier
    assert [f.reduction for f in model.feature_info] == [1, 2, 4, 4]


def test_gate_bias_starts_negative():
    """Section 2.2: b_T initialised negative (the authors' CIFAR files: -2) biases every layer towards carrying."""
    model = convzoo.create_model("highway_cifar_19")
    for layer in model.highway_layers():
        assert torch.all(layer.gate.bias == -2.0)
        assert torch.all(layer.transform.bias == 0.0)
    # With the bias at -2 a fresh layer lets through about sigmoid(-2) = 12% of the transform.
    x = torch.randn(2, 32, 8, 8)
    gate = model.stage1.highway1.transform_gate(x)
    assert 0.05 < gate.mean().item() < 0.25
    custom = convzoo.create_model("highway_cifar_19", gate_bias=-3.0)
    assert all(torch.all(layer.gate.bias == -3.0) for layer in custom.highway_layers())


def test_closed_gate_is_the_identity_and_open_gate_the_plain_layer():
    torch.manual_seed(0)
    layer = HighwayConv2d(8)
    layer.reset_parameters()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        layer.gate.bias.fill_(-1e4)  # T(x) = 0: y = x, exactly
        assert torch.equal(layer(x), x)
        layer.gate.bias.fill_(1e4)  # T(x) = 1: y = H(x) = ReLU(conv_H(x))
        assert torch.equal(layer(x), torch.relu(layer.transform(x)))
        layer.gate.bias.fill_(-2.0)
        h, t = torch.relu(layer.transform(x)), torch.sigmoid(layer.gate(x))
        torch.testing.assert_close(layer(x), h * t + x * (1 - t))


def deep_stack(gated: bool) -> nn.Module:
    torch.manual_seed(0)
    return convzoo.create_model(
        "highway_cifar_19",
        widths=(16,),
        layers=(60,),
        head_width=16,
        input_drop_rate=0.0,
        drop_rate=0.0,
        gated=gated,
    )


def test_sixty_layers_pass_signal_and_gradient_where_the_plain_stack_does_not():
    """Figure 1's point, at initialisation: through 60 gated layers the signal and the gradient reach the other end;
    through the same 60 layers without gates (each layer its transform H alone) both vanish."""
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    target = torch.arange(8) % 10
    stats = {}
    for gated in (True, False):
        model = deep_stack(gated)
        xi = x.clone().requires_grad_(True)
        features = model.forward_features(xi)
        nn.functional.cross_entropy(model.forward_head(features), target).backward()
        first_layer = model.stage1.plain.conv.weight.grad.norm().item()
        stats[gated] = (features.std().item(), xi.grad.norm().item(), first_layer)
    for highway, plain in zip(stats[True], stats[False]):
        assert highway > 1e4 * plain, stats
    assert stats[True][2] > 1e-6, stats  # the first layer of the highway stack gets a usable gradient


def test_plain_twin_drops_only_the_gates():
    model = convzoo.create_model("highway_cifar_19", gated=False)
    assert not model.highway_layers()
    gates = sum(w * w * 9 + w for w, n in zip((32, 80, 128), (4, 5, 5)) for _ in range(n))
    assert n_params("highway_cifar_19") - n_params("highway_cifar_19", gated=False) == gates


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"widths": (32, 80)}, "widths and layers need one entry per stage; got 2 and 3"),
        ({"kernel_size": 2}, "kernel_size must be odd"),
        ({"gate_bias": float("-inf")}, "gate_bias must be finite"),
        ({"layers": (4, -1, 5)}, "a stage cannot have a negative number of highway layers"),
        ({"drop_rate": 1.0}, r"input_drop_rate and drop_rate must lie in \[0, 1\)"),
        ({"head_width": 0}, "widths and head_width must be positive"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"highway_cifar_19: {message}"):
        convzoo.create_model("highway_cifar_19", **overrides)


def test_card_cites_table_3():
    card = convzoo.get_model_card("highway_cifar_19")
    assert card.top1_accuracy() == 92.40 and card.reported[0].source == "Table 3"
    assert card.reported[1].dataset == "CIFAR-100" and card.reported[1].value == 67.76


def test_golden_outputs(golden):
    """No installed library has highway networks; these outputs pin the implementation down."""
    name, size = "highway_cifar_19", 16
    torch.manual_seed(0)
    model = convzoo.create_model(name).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model.eval()(x)
    golden(name, {"logits": logits}, model=name, input=[2, 3, size, size])
