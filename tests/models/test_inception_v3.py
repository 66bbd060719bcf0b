"""Inception v3 (Szegedy et al. 2016): torchvision equivalence, the auxiliary classifier, the factorised modules and
the grid sizes of Table 1."""

import copy

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.models.base import AuxOutputs, classification_loss
from convzoo.models.inception_v3 import InceptionA, InceptionB, InceptionC, InceptionD, InceptionE


def n_params(**kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model("inception_v3", **kwargs))


def torchvision_inception(**kwargs) -> nn.Module:
    """torchvision's Inception v3 with random weights and non-trivial batch-norm statistics, in eval mode."""
    model = torchvision.models.inception_v3(weights=None, init_weights=True, **kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return torchvision_inception(aux_logits=True)


@pytest.fixture(scope="module")
def ours(reference):
    """Ours with the reference's weights, in eval mode. A test that trains works on a copy, so that batch-norm
    statistics stay equal to the reference's."""
    model = convzoo.create_model("inception_v3").eval()
    convzoo.load_weights(model, reference.state_dict())
    return model


def test_parameter_counts_equal_torchvision():
    assert n_params() == 27_161_264
    without = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    assert n_params(aux_logits=False) == sum(p.numel() for p in without.parameters()) == 23_834_568


def test_matches_torchvision_in_eval_mode(ours, reference):
    for size in (75, 107):  # the smallest input, and one with a 2x2 final grid
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_transform_input_matches_torchvision():
    torch.manual_seed(0)
    reference = torchvision_inception(aux_logits=False, transform_input=True)
    ours = convzoo.create_model("inception_v3", aux_logits=False, transform_input=True).eval()
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
        reference.transform_input = False
        assert not torch.allclose(reference(x), ours(x))


def test_matches_torchvision_in_training_mode_at_299(ours, reference):
    ours, reference = copy.deepcopy(ours).train(), copy.deepcopy(reference).train()
    x = torch.randn(2, 3, 299, 299)
    torch.manual_seed(1)  # the same dropout mask
    expected = reference(x)
    torch.manual_seed(1)
    out = ours(x)
    assert isinstance(out, AuxOutputs) and out.aux_weights == (0.4,)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.aux_logits[0], expected.aux_logits, atol=1e-5, rtol=1e-5)
    target = torch.tensor([3, 9])
    loss = nn.functional.cross_entropy(out.logits, target) + 0.4 * nn.functional.cross_entropy(
        out.aux_logits[0], target
    )
    torch.testing.assert_close(classification_loss(out, target), loss)


def test_auxiliary_head_runs_only_in_training_and_below_299(ours):
    model = copy.deepcopy(ours)
    calls = []
    model.AuxLogits.register_forward_hook(lambda _m, _i, out: calls.append(out.shape))
    x = torch.randn(2, 3, 75, 75)
    model.train()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, AuxOutputs) and calls == [(2, 1000)] and out.logits.shape == (2, 1000)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
    assert len(calls) == 1


def test_auxiliary_head_pads_grids_below_17x17(ours, reference):
    # torchvision's head needs the 17x17 grid of a 299x299 input (298x298 leaves 16x16); ours zero-pads a smaller
    # grid and is torchvision's from 17x17 up.
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            reference.AuxLogits(torch.randn(1, 768, 16, 16))
        assert ours.AuxLogits(torch.randn(1, 768, 16, 16)).shape == (1, 1000)
        assert ours.AuxLogits(torch.randn(1, 768, 1, 1)).shape == (1, 1000)
        for grid in (17, 20):
            x = torch.randn(1, 768, grid, grid)
            torch.testing.assert_close(ours.AuxLogits(x), reference.AuxLogits(x), atol=1e-5, rtol=1e-5)


def test_auxiliary_head_reads_the_last_17x17_layer():
    with torch.device("meta"):
        model = convzoo.create_model("inception_v3")
    assert model.AuxLogits.conv0.conv.in_channels == 768
    assert model.AuxLogits.conv1.conv.kernel_size == (5, 5)
    # Batch-normalised convolutions in the side head (the paper's "BN-auxiliary"), a plain linear classifier.
    assert isinstance(model.AuxLogits.conv1.bn, nn.BatchNorm2d) and isinstance(model.AuxLogits.fc, nn.Linear)
    with torch.device("meta"):
        assert convzoo.create_model("inception_v3", aux_logits=False).AuxLogits is None


def test_torchvision_checkpoints_load_into_either_build_and_other_class_counts(reference):
    # What create_model(..., weights=path) does with a torchvision checkpoint, without the file round trip.
    state = reference.state_dict()
    without = convzoo.load_weights(convzoo.create_model("inception_v3", aux_logits=False), state).eval()
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(without(x), reference(x), atol=1e-5, rtol=1e-5)
    ten = convzoo.create_model("inception_v3", num_classes=10)
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        convzoo.load_weights(ten, state, skip_classifier="auto")
    assert ten.fc.out_features == ten.AuxLogits.fc.out_features == 10
    torch.testing.assert_close(ten.AuxLogits.conv1.conv.weight, reference.AuxLogits.conv1.conv.weight)
    with torch.no_grad():
        torch.testing.assert_close(ten.eval().forward_features(x), without.forward_features(x))


def test_reset_classifier_resets_the_auxiliary_classifier():
    model = convzoo.create_model("inception_v3")
    hidden = model.AuxLogits.conv1.conv.weight.detach().clone()
    model.reset_classifier(4)
    assert model.fc.out_features == model.AuxLogits.fc.out_features == 4
    torch.testing.assert_close(model.AuxLogits.conv1.conv.weight, hidden)
    model.reset_classifier(0)
    assert model.AuxLogits is None
    x = torch.randn(2, 3, 75, 75)
    assert model.train()(x).shape == (2, 2048)
    model.reset_classifier(2)
    out = model(x)
    assert [t.shape for t in (out.logits, *out.aux_logits)] == [(2, 2)] * 2
    assert convzoo.count_params(model) == n_params(num_classes=2)


# Table 1 of the paper, as the released network realises it: grid and width after each group at 299x299.
GRIDS = {
    "Conv2d_1a_3x3": (149, 32),
    "Conv2d_2a_3x3": (147, 32),
    "Conv2d_2b_3x3": (147, 64),
    "maxpool1": (73, 64),
    "Conv2d_4a_3x3": (71, 192),
    "maxpool2": (35, 192),
    "Mixed_5d": (35, 288),  # "3 x Inception, 35x35x288"
    "Mixed_6e": (17, 768),  # "5 x Inception, 17x17x768"
    "Mixed_7a": (8, 1280),  # "8x8x1280"
    "Mixed_7c": (8, 2048),  # "2 x Inception, 8x8x2048"
}


def test_grid_sizes_at_299_follow_table1(ours):
    shapes = {}
    hooks = [
        getattr(ours, name).register_forward_hook(
            lambda _m, _i, out, key=name: shapes.__setitem__(key, (out.shape[-1], out.shape[1]))
        )
        for name in GRIDS
    ]
    with torch.no_grad():
        ours(torch.randn(1, 3, 299, 299))
    for hook in hooks:
        hook.remove()
    assert shapes == GRIDS


def test_modules_are_factorised_as_in_the_paper():
    with torch.device("meta"):
        model = convzoo.create_model("inception_v3")
    kinds = {name: type(getattr(model, name)) for name in model.layer_names if name.startswith("Mixed")}
    assert list(kinds.values()) == [InceptionA] * 3 + [InceptionB] + [InceptionC] * 4 + [InceptionD] + [InceptionE] * 2
    # Figure 5: a 5x5 factorised into two 3x3.
    assert [model.Mixed_5b.branch3x3dbl_2.conv.kernel_size, model.Mixed_5b.branch3x3dbl_3.conv.kernel_size] == [
        (3, 3)
    ] * 2
    # Figure 6, n = 7: 1x7 and 7x1 in place of 7x7.
    block = model.Mixed_6b
    assert [block.branch7x7_2.conv.kernel_size, block.branch7x7_3.conv.kernel_size] == [(1, 7), (7, 1)]
    assert [model.Mixed_6c.branch7x7_1.conv.out_channels, model.Mixed_6e.branch7x7_1.conv.out_channels] == [160, 192]
    # Figure 7: expanded filter bank outputs, 1x3 and 3x1 side by side.
    assert [model.Mixed_7b.branch3x3_2a.conv.kernel_size, model.Mixed_7b.branch3x3_2b.conv.kernel_size] == [
        (1, 3),
        (3, 1),
    ]
    # Figure 10: the grid reductions pair stride-2 convolutions with a stride-2 pool.
    assert model.Mixed_6a.branch3x3.conv.stride == model.Mixed_7a.branch3x3_2.conv.stride == (2, 2)
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}


def test_multiply_adds_equal_torchvision_figure():
    # torchvision's documentation lists 5.713 GFLOPS (multiply-adds) at 299x299.
    with torch.device("meta"):
        model = convzoo.create_model("inception_v3")
    assert round(convzoo.count_macs(model, (3, 299, 299), device="meta") / 1e9, 3) == 5.713


def test_feature_info(ours):
    info = ours.feature_info
    modules = dict(ours.named_modules())
    assert all(f.module in modules for f in info)
    assert [f.module for f in info] == ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]
    assert [f.num_chs for f in info] == [64, 192, 288, 768, 2048]
    assert [f.reduction for f in info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        maps = ours.forward_intermediates(torch.randn(1, 3, 75, 75))
        larger = ours.forward_intermediates(torch.randn(1, 3, 75 + 32, 75 + 32))
    # Unpadded layers give maps smaller than size / reduction, but the reduction is still the cumulative stride:
    # 32 more input pixels give 32 / reduction more map pixels.
    assert [m.shape[-1] for m in maps] == [35, 15, 7, 3, 1]
    assert [b.shape[-1] - m.shape[-1] for m, b in zip(maps, larger)] == [32 // f.reduction for f in info]


def test_minimum_input_size_is_the_true_minimum(ours, reference):
    assert ours.min_input_size == 75
    with torch.no_grad():
        reference(torch.randn(1, 3, 75, 75))
        with pytest.raises(RuntimeError):
            reference(torch.randn(1, 3, 74, 74))
    with pytest.raises(ValueError, match="inception_v3 needs images of at least 75x75"):
        ours(torch.randn(1, 3, 74, 80))
    ours.min_input_size = 1  # without the check, the network itself fails one pixel below
    try:
        with pytest.raises(RuntimeError), torch.no_grad():
            ours(torch.randn(1, 3, 74, 74))
    finally:
        ours.min_input_size = 75


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"drop_rate": -0.1}, r"drop_rate must lie in \[0, 1\)"),
        ({"aux_weight": -1.0}, "aux_weight must be non-negative"),
        ({"transform_input": True, "in_chans": 4}, "transform_input maps RGB ImageNet statistics"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"inception_v3: {message}"):
        convzoo.create_model("inception_v3", **overrides)


def test_unknown_keyword_and_wrong_input():
    with pytest.raises(TypeError, match=r"inception_v3 got unexpected keyword argument\(s\) 'ch5x5_kernel'"):
        convzoo.create_model("inception_v3", ch5x5_kernel=5)
    model = convzoo.create_model("inception_v3", in_chans=1, num_classes=2, aux_logits=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 80, 80)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 1, H, W\)"):
        model(torch.randn(1, 3, 80, 80))


def test_model_card():
    card = convzoo.get_model_card("inception_v3")
    assert card.input_size == (3, 299, 299) and card.paper.year == 2016 and card.paper.venue == "CVPR"
    assert [(r.metric, r.value, r.source) for r in card.reported] == [
        ("top-1 error", 21.2, "Table 3"),
        ("top-5 error", 5.6, "Table 3"),
    ]
    assert card.top1_accuracy() == pytest.approx(78.8)
    assert "0.4" in card.notes and "5x5 branch" in card.notes
