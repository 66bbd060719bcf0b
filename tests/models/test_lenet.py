"""LeNet-5: the paper's per-layer parameter counts and map sizes, the C3 connection table of Table I, the trainable
subsampling layers, the fully connected head, and golden outputs (no installed peer ships LeNet-5)."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.layers.trunk import map_size
from convzoo.models.lenet import LECUN_C3_TABLE, ConnectionTableConv2d, ScaledTanh, Subsampling


def lenet(**kwargs) -> nn.Module:
    return convzoo.create_model("lenet5", in_chans=1, **kwargs)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_of_section_2b():
    model = lenet()
    f = model.features
    # Section II-B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters: 60,000 in all.
    assert [n_params(f.c1), n_params(f.s2), n_params(f.c3), n_params(f.s4), n_params(f.c5)] == [
        156,
        12,
        1516,
        32,
        48120,
    ]
    assert n_params(model.classifier[0]) == 10_164
    assert convzoo.count_params(model) - n_params(model.get_classifier()) == 60_000
    # The linear output layer that replaces the RBF units: 84 x 10 weights and 10 biases.
    assert n_params(model.get_classifier()) == 850
    assert convzoo.count_params(model) == 60_850


def test_map_sizes_of_figure_2_and_true_minimum():
    model = lenet().eval()
    x = torch.randn(2, 1, 32, 32)
    sizes = []
    with torch.no_grad():
        for name, layer in model.features.named_children():
            x = layer(x)
            if not name.startswith("act"):
                sizes.append((name, tuple(x.shape[1:])))
    assert sizes == [
        ("c1", (6, 28, 28)),
        ("s2", (6, 14, 14)),
        ("c3", (16, 10, 10)),
        ("s4", (16, 5, 5)),
        ("c5", (120, 1, 1)),
    ]
    # 32x32 is the smallest input that leaves C5 a pixel: the paper's input size is also the network's minimum.
    assert model.min_input_size == 32
    assert map_size(model.features, 32) == 1 and map_size(model.features, 31) == 0
    with pytest.raises(ValueError, match=r"lenet5 needs images of at least 32x32 .*got 31x32"):
        model(torch.randn(1, 1, 31, 32))
    with pytest.raises(RuntimeError):
        model.features(torch.randn(1, 1, 31, 31))
    assert [(f.num_chs, f.reduction, f.module) for f in model.feature_info] == [
        (6, 1, "features.act1"),
        (16, 2, "features.act3"),
        (120, 4, "features.act5"),
    ]


def test_c3_connection_table_is_table_1():
    table = [set(row) for row in LECUN_C3_TABLE]
    contiguous = [{(i + d) % 6 for d in range(n)} for n in (3, 4) for i in range(6)]
    # The first six maps read every contiguous (cyclic) triple of S2 maps, the next six every contiguous quadruple,
    # the next three discontinuous quadruples, the last all six maps.
    assert table[:12] == contiguous
    assert all(len(row) == 4 and row not in contiguous for row in table[12:15])
    assert len({frozenset(row) for row in table[12:15]}) == 3
    assert table[15] == set(range(6))
    # Table I, read row by row: S2 map 0 feeds C3 maps 0, 4, 5, 6, 9, 10, 11, 12, 14, 15.
    assert [j for j, row in enumerate(table) if 0 in row] == [0, 4, 5, 6, 9, 10, 11, 12, 14, 15]
    assert sum(len(row) for row in table) == 60  # 60 x 25 weights + 16 biases = 1,516 parameters


def test_c3_reads_only_its_table_columns():
    torch.manual_seed(0)
    c3 = ConnectionTableConv2d(6, LECUN_C3_TABLE, 5).eval()
    x = torch.randn(1, 6, 14, 14)
    with torch.no_grad():
        base = c3(x)
        for i in range(6):
            bumped = x.clone()
            bumped[:, i] += 1.0
            changed = (c3(bumped) - base).abs().amax(dim=(0, 2, 3)) > 0
            assert changed.tolist() == [i in row for row in LECUN_C3_TABLE], i
        # The same layer as a dense 6 -> 16 convolution whose unconnected kernels are zero: the gathering and the
        # reordering of the grouped convolutions put every output map and every kernel where Table I says.
        dense = nn.Conv2d(6, 16, 5)
        dense.weight.zero_()
        for conv, maps in zip(c3.convs, _groups_by_fan_in(LECUN_C3_TABLE)):
            for g, j in enumerate(maps):
                dense.weight[j, list(LECUN_C3_TABLE[j])] = conv.weight[g]
                dense.bias[j] = conv.bias[g]
        torch.testing.assert_close(c3(x), dense(x))


def _groups_by_fan_in(table):
    groups: dict[int, list[int]] = {}
    for j, row in enumerate(table):
        groups.setdefault(len(row), []).append(j)
    return list(groups.values())


def test_connection_table_rejects_bad_tables():
    with pytest.raises(ValueError, match="outside 0..5"):
        ConnectionTableConv2d(6, [(0, 6)], 5)
    with pytest.raises(ValueError, match="distinct input maps"):
        ConnectionTableConv2d(6, [(0, 0, 1)], 5)


def test_subsampling_and_squashing_follow_the_paper():
    s2 = Subsampling(2)
    with torch.no_grad():
        s2.weight.copy_(torch.tensor([0.5, -2.0]))
        s2.bias.copy_(torch.tensor([0.1, 0.3]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    # Each unit: (sum of its 2x2 inputs) x coefficient + bias.
    sums = x.view(1, 2, 2, 2, 2, 2).sum(dim=(3, 5))
    torch.testing.assert_close(
        s2(x), sums * torch.tensor([0.5, -2.0]).view(1, 2, 1, 1) + torch.tensor([0.1, 0.3]).view(1, 2, 1, 1)
    )
    # f(a) = 1.7159 tanh(2a/3) is chosen so that f(1) = 1 and f(-1) = -1 (Appendix A).
    f = ScaledTanh()
    torch.testing.assert_close(f(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0)


def test_initialisation_is_uniform_in_2_4_over_fan_in():
    torch.manual_seed(0)
    model = lenet()
    f = model.features
    bounds = {
        f.c1.weight: 2.4 / 25,
        f.s2.weight: 2.4 / 4,
        f.c5.weight: 2.4 / 400,
        model.classifier[0].weight: 2.4 / 120,
        model.classifier[2].weight: 2.4 / 84,
    }
    bounds.update({conv.weight: 2.4 / conv.weight[0].numel() for conv in f.c3.convs})
    for weight, bound in bounds.items():
        assert weight.abs().max() <= bound
        if weight.numel() >= 100:  # enough draws to come close to the bound
            assert weight.abs().max() > 0.9 * bound


def test_head_keeps_f6_on_reset_and_drops_it_without_classifier():
    torch.manual_seed(0)
    model = lenet().eval()
    x = torch.randn(3, 1, 32, 32)
    f6 = model.classifier[0].weight.clone()
    with torch.no_grad():
        c5 = model.forward_features(x)
        # The pre-logits vector is F6's output, the 84 values the output layer reads.
        f6_out = model.classifier[1](model.classifier[0](c5.flatten(1)))
        assert model.head_hidden_size == 84 and f6_out.shape == (3, 84)
        torch.testing.assert_close(model.forward_head(c5, pre_logits=True), f6_out)
        assert model.get_classifier() is model.classifier[2]
        model.reset_classifier(26)
        assert torch.equal(model.classifier[0].weight, f6) and model(x).shape == (3, 26)
        model.reset_classifier(0)
        assert model.num_features == 120 and isinstance(model.classifier, nn.Identity)
        torch.testing.assert_close(model(x), c5.flatten(1))
        model.reset_classifier(10)
        assert [type(m) for m in model.classifier] == [nn.Linear, ScaledTanh, nn.Linear]
        assert model(x).shape == (3, 10)


def test_modern_options_and_their_parameter_counts():
    full = lenet(connection_table=False)
    assert isinstance(full.features.c3, nn.Conv2d) and n_params(full.features.c3) == 2416
    assert convzoo.count_params(full) == 60_850 + 900
    relu_max = lenet(subsampling="max", activation="relu")
    assert n_params(relu_max.features.s2) == 0 and isinstance(relu_max.features.act2, nn.Identity)
    assert convzoo.count_params(relu_max) == 60_850 - 12 - 32
    assert relu_max(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    wide = lenet(widths=(20, 50, 500, 84), connection_table=False)
    assert wide.num_features == 500 and wide(torch.randn(1, 1, 40, 40)).shape == (1, 10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"widths": (8, 16, 120, 84)}, "the connection table of Table I joins 6 S2 maps to 16 C3 maps"),
        ({"widths": (6, 16, 120)}, r"widths are four positive numbers"),
        ({"subsampling": "median"}, "unknown subsampling 'median'"),
        ({"activation": "sigmoid"}, "unknown activation 'sigmoid'"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"lenet5: {message}"):
        lenet(**overrides)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="lenet5 got unexpected keyword argument.*'width'.*did you mean 'widths'"):
        lenet(width=(6, 16, 120, 84))


def test_model_card_normalisation_is_the_papers():
    card = convzoo.get_model_card("lenet5")
    assert card.input_size == (1, 32, 32) and card.num_classes == 10 and card.paper.year == 1998
    # Section II-A: background (0) at -0.1, ink (1) at 1.175.
    normalise = [(p - card.mean[0]) / card.std[0] for p in (0.0, 1.0)]
    assert normalise == pytest.approx([-0.1, 1.175])
    assert "0.95%" in card.notes and "0.8%" in card.notes and "60,000" in card.notes


def lenet5_outputs() -> dict[str, list]:
    torch.manual_seed(0)
    model = lenet().eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_features(x)
        return {"logits": model.forward_head(features).tolist(), "c5": features.flatten(1)[:, :16].tolist()}


def test_golden_outputs(golden):
    golden("lenet5", {key: torch.tensor(value) for key, value in lenet5_outputs().items()})


def test_default_channels_follow_the_card():
    assert convzoo.create_model("lenet5").in_chans == 1
    assert convzoo.summary("lenet5").input_size == (1, 32, 32)
