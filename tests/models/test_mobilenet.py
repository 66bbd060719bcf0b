"""The MobileNet family: the paper's parameter and multiply-add tables, torchvision equivalence, golden outputs."""

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers.mobile import DepthwiseSeparable, InvertedResidual, make_divisible

V1_WIDTHS = {"mobilenet_v1": 1.0, "mobilenet_v1_075": 0.75, "mobilenet_v1_050": 0.5, "mobilenet_v1_025": 0.25}


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return convzoo.create_model(name, **kwargs)


def macs(name: str, **kwargs) -> int:
    return convzoo.count_macs(meta_model(name, **kwargs), convzoo.get_model_card(name).input_size)


def weights_only(model: nn.Module) -> int:
    """Convolution and FC weights: what Howard et al. count as parameters (no batch norm, no biases)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


# ----------------------------------------------------------------------------------------------------------------
# MobileNet v1 against Howard et al. 2017.

# Every parameter, with a 1000-way FC layer that has a bias.
V1_EXACT_PARAMS = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_075": 2_585_560,
    "mobilenet_v1_050": 1_331_592,
    "mobilenet_v1_025": 470_072,
}
# Multiply-adds at 224x224 (convolutions and the FC layer) and Table 6's figures, rounded to the nearest million.
V1_EXACT_MACS = {
    "mobilenet_v1": (568_740_352, 569),
    "mobilenet_v1_075": (325_400_448, 325),
    "mobilenet_v1_050": (149_497_088, 149),
    "mobilenet_v1_025": (41_030_272, 41),
}
# Table 6 (and Table 9 for 0.50 MobileNet-160) in millions, and how many decimals the table prints.
V1_PAPER_PARAMS = {
    "mobilenet_v1": (4.2, 1),
    "mobilenet_v1_075": (2.6, 1),
    "mobilenet_v1_050": (1.3, 1),
    "mobilenet_v1_025": (0.5, 1),
    "mobilenet_v1_050_160": (1.32, 2),
}


@pytest.mark.parametrize("name", sorted(V1_EXACT_PARAMS))
def test_v1_exact_parameter_counts(name):
    assert convzoo.count_params(meta_model(name)) == V1_EXACT_PARAMS[name]


@pytest.mark.parametrize("name", sorted(V1_PAPER_PARAMS))
def test_v1_parameter_counts_of_tables_6_and_9(name):
    # The paper counts weights only: with batch norm, 0.50 MobileNet has 1.33M parameters where Table 9 prints 1.32M.
    millions, decimals = V1_PAPER_PARAMS[name]
    assert round(weights_only(meta_model(name)) / 1e6, decimals) == millions


@pytest.mark.parametrize("name", sorted(V1_EXACT_MACS))
def test_v1_multiply_adds_of_table_6(name):
    exact, table = V1_EXACT_MACS[name]
    assert macs(name) == exact
    assert round(exact / 1e6) == table


def test_v1_resolution_multiplier_scales_multiply_adds_by_rho_squared():
    """Table 7: 1.0 MobileNet at 224, 192, 160 and 128 pixels needs 569, 418, 290 and 186 million multiply-adds.

    The paper scales its 224-pixel count by rho^2 (section 3.4): round(569 * rho^2) gives each row. Built, the
    convolutions scale by exactly rho^2 (every map is 224 * rho / stride pixels wide) and the FC layer's 1.024M stays,
    so the exact counts are 568.7M, 418.1M, 290.7M and 186.4M. Table 9's 0.50 MobileNet-160 (76M) follows the same
    rule from Table 6's 149M.
    """
    fc = 1024 * 1000
    conv_224 = macs("mobilenet_v1") - fc
    table_7 = {"mobilenet_v1_100_192": 418, "mobilenet_v1_100_160": 290, "mobilenet_v1_100_128": 186}
    exact = {
        "mobilenet_v1_100_192": 418_121_728,
        "mobilenet_v1_100_160": 290_675_200,
        "mobilenet_v1_100_128": 186_400_768,
    }
    for name, table in table_7.items():
        res = convzoo.get_model_card(name).input_size[-1]
        count = macs(name)
        assert count == exact[name]
        assert (count - fc) * 224**2 == conv_224 * res**2
        assert round(569 * (res / 224) ** 2) == table
        assert abs(count / 1e6 - table) < 1
        assert convzoo.count_params(meta_model(name)) == V1_EXACT_PARAMS["mobilenet_v1"]
    half_160 = macs("mobilenet_v1_050_160")
    assert half_160 == 76_524_800 and round(149 * (160 / 224) ** 2) == 76
    assert (half_160 - 512 * 1000) * 224**2 == (macs("mobilenet_v1_050") - 512 * 1000) * 160**2


def test_v1_resource_split_of_table_2():
    """Table 2: where 1.0 MobileNet-224 spends its multiply-adds and parameters, by layer type.

    The table prints 94.86% / 74.59% for 1x1 convolutions, 3.06% / 1.06% for depthwise 3x3, 1.19% / 0.02% for the
    full 3x3 convolution and 0.18% / 24.33% for the FC layer. Built, the full convolution spends 1.91% of the
    multiply-adds: the table's 1.19% swaps two digits (its column then sums to 99.29%, with 1.91% to 100.01%).
    """
    model = convzoo.create_model("mobilenet_v1").eval()
    spent = {"1x1": [0, 0], "dw": [0, 0], "full": [0, 0], "fc": [0, 0]}

    def kind(m: nn.Module) -> str:
        if isinstance(m, nn.Linear):
            return "fc"
        return "dw" if m.groups > 1 else ("1x1" if m.kernel_size == (1, 1) else "full")

    def hook(m: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        positions = 1 if isinstance(m, nn.Linear) else out.shape[-2] * out.shape[-1]
        spent[kind(m)][0] += m.weight.numel() * positions
        spent[kind(m)][1] += m.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    total_macs = sum(v[0] for v in spent.values())
    total_params = sum(v[1] for v in spent.values())
    share = {k: (round(100 * m / total_macs, 2), round(100 * p / total_params, 2)) for k, (m, p) in spent.items()}
    assert share == {"1x1": (94.86, 74.59), "dw": (3.06, 1.06), "full": (1.91, 0.02), "fc": (0.18, 24.33)}
    assert total_macs == V1_EXACT_MACS["mobilenet_v1"][0]


def test_v1_body_is_table_1():
    model = convzoo.create_model("mobilenet_v1").eval()
    blocks = [m for m in model.modules() if isinstance(m, DepthwiseSeparable)]
    assert len(blocks) == 13
    strides = [b.dw[0].stride[0] for b in blocks]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert all(b.dw[0].groups == b.dw[0].in_channels == b.dw[0].out_channels for b in blocks)
    # "Counting depthwise and pointwise convolutions as separate layers, MobileNet has 28 layers."
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == 28
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (32, 112, 112),
        (64, 112, 112),
        (128, 56, 56),
        (256, 28, 28),
        (512, 14, 14),
        (1024, 7, 7),
    ]


@pytest.mark.parametrize("name", sorted(V1_WIDTHS))
def test_v1_width_multiplier_thins_every_layer(name):
    alpha = V1_WIDTHS[name]
    model = meta_model(name)
    full = meta_model("mobilenet_v1")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    full_convs = [m for m in full.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [int(alpha * c.out_channels) for c in full_convs]
    assert convs[0].in_channels == 3 and model.num_features == int(1024 * alpha)
    assert convzoo.count_params(convzoo.create_model("mobilenet_v1", width_multiplier=alpha)) == (
        convzoo.count_params(model)
    )


def test_depthwise_separable_costs_one_over_n_plus_one_ninth_of_a_full_convolution():
    # Section 3.1: (D_K^2 M D_F^2 + M N D_F^2) / (D_K^2 M N D_F^2) = 1/N + 1/D_K^2.
    block = DepthwiseSeparable(512, 512)
    separable = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))  # per output position
    full = nn.Conv2d(512, 512, 3, bias=False).weight.numel()
    assert separable * 512 * 9 == full * (9 + 512)


# ----------------------------------------------------------------------------------------------------------------
# MobileNet v2 against torchvision and Sandler et al. 2018.


def randomized(reference: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and biases, so a misplaced layer cannot hide behind an identity."""
    torch.manual_seed(1)
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
        elif isinstance(m, nn.Linear):
            m.bias.data.uniform_(-0.1, 0.1)
    return reference.eval()


@pytest.mark.parametrize("width", [0.35, 0.75, 1.4])
def test_v2_width_multiplier_counts_equal_torchvision(width):
    with torch.device("meta"):
        reference = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
    assert convzoo.count_params(meta_model("mobilenet_v2", width_multiplier=width)) == (
        sum(p.numel() for p in reference.parameters())
    )


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_v2_matches_torchvision(width):
    torch.manual_seed(0)
    reference = randomized(torchvision.models.mobilenet_v2(weights=None, width_mult=width))
    ours = convzoo.create_model("mobilenet_v2", width_multiplier=width).eval()
    convzoo.load_weights(ours, reference.state_dict())
    assert convzoo.count_params(ours) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_v2_counts():
    model = meta_model("mobilenet_v2")
    assert convzoo.count_params(model) == 3_504_872  # torchvision's mobilenet_v2
    # Table 4: 3.4M parameters (3.47M without batch norm) and 300M multiply-adds (300.8M, truncated).
    assert round(weights_only(model) / 1e6, 2) == 3.47
    assert macs("mobilenet_v2") == 300_774_272


def test_v2_body_is_table_2():
    model = convzoo.create_model("mobilenet_v2")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert [b.out_chs for b in blocks] == [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    # Shortcuts join only blocks that keep shape; the projection is linear (section 3.2).
    assert [b.residual for b in blocks].count(True) == 10
    assert all(isinstance(b.conv[-1], nn.BatchNorm2d) for b in blocks)
    assert [f.reduction for f in model.feature_info] == [2, 2, 4, 8, 16, 32]
    assert [f.num_chs for f in model.feature_info] == [32, 16, 24, 32, 96, 1280]


def test_v2_keeps_1280_head_channels_for_narrow_networks():
    assert meta_model("mobilenet_v2", width_multiplier=0.5).num_features == 1280
    assert meta_model("mobilenet_v2", width_multiplier=1.4).num_features == 1792
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24 * 0.75, 100.0)] == [16, 8, 24, 104]


def test_v2_torchvision_checkpoint_loads_through_weights_argument(tmp_path):
    reference = randomized(torchvision.models.mobilenet_v2(weights=None))
    path = tmp_path / "mobilenet_v2_tv.pth"
    torch.save(reference.state_dict(), path)
    ours = convzoo.create_model("mobilenet_v2", weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        small = convzoo.create_model("mobilenet_v2", weights=path, num_classes=10).eval()
    torch.testing.assert_close(small.features[5].conv[1][0].weight, reference.features[5].conv[1][0].weight)
    assert small(x).shape == (1, 10)


# ----------------------------------------------------------------------------------------------------------------
# Both: geometry, bad input, golden outputs.


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_feature_maps_grow_by_one_step_per_reduction(name):
    model = meta_model(name).eval()
    step = model.feature_info[-1].reduction
    small = model.forward_intermediates(torch.empty(1, 3, 40, 40, device="meta"))
    big = model.forward_intermediates(torch.empty(1, 3, 40 + step, 40 + step, device="meta"))
    for info, a, b in zip(model.feature_info, small, big):
        assert a.shape[-1] == -(-40 // info.reduction), info  # padded convolutions: ceil(size / reduction)
        assert b.shape[-1] - a.shape[-1] == step // info.reduction, info


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2"])
def test_too_small_input_is_refused(name):
    model = convzoo.create_model(name).eval()
    assert model.min_input_size == 32
    with pytest.raises(ValueError, match=rf"{name} needs images of at least 32x32 .*got 31x40"):
        model(torch.randn(1, 3, 31, 40))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_impossible_configurations_are_refused():
    with pytest.raises(ValueError, match="mobilenet_v1: width_multiplier .* must be positive"):
        convzoo.create_model("mobilenet_v1", width_multiplier=0)
    with pytest.raises(ValueError, match="mobilenet_v1_025: width_multiplier=0.01 leaves the 32-channel layer"):
        convzoo.create_model("mobilenet_v1_025", width_multiplier=0.01)
    with pytest.raises(ValueError, match="mobilenet_v1: every stage needs >= 1 block and stride 1 or 2"):
        convzoo.create_model("mobilenet_v1", stages=[(64, 1, 3)])
    with pytest.raises(ValueError, match="mobilenet_v2: a block row needs"):
        convzoo.create_model("mobilenet_v2", blocks=[(6, 24, 0, 2)])
    with pytest.raises(TypeError, match="mobilenet_v2 got unexpected keyword argument.*'width_mult'.*accepted keys"):
        convzoo.create_model("mobilenet_v2", width_mult=0.5)
    with pytest.raises(TypeError, match="mobilenet_v1 got unexpected keyword argument.*'alpha'"):
        convzoo.create_model("mobilenet_v1", alpha=0.5)


def test_cards_cite_the_tables():
    card = convzoo.get_model_card("mobilenet_v1")
    assert card.paper.year == 2017 and card.top1_accuracy() == 70.6 and card.reported[0].source == "Table 6"
    assert [convzoo.get_model_card(n).top1_accuracy() for n in sorted(V1_WIDTHS)] == [70.6, 50.6, 63.7, 68.4]
    for name, (res, acc) in {"mobilenet_v1_100_192": (192, 69.1), "mobilenet_v1_100_128": (128, 64.4)}.items():
        card = convzoo.get_model_card(name)
        assert card.input_size == (3, res, res) and card.top1_accuracy() == acc and card.reported[0].source == "Table 7"
    v2 = convzoo.get_model_card("mobilenet_v2")
    assert v2.top1_accuracy() == 72.0 and v2.reported[0].source == "Table 4" and v2.paper.venue == "CVPR"


GOLDEN = {"mobilenet_v1": 64, "mobilenet_v1_025": 64}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_outputs(name, golden):
    size = GOLDEN[name]
    golden(name, {"logits": golden.calibrated_logits(name, size)}, model=name, input=[2, 3, size, size])
