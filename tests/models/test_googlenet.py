"""GoogLeNet (Szegedy et al. 2015): Table 1, torchvision equivalence, auxiliary classifiers, and the Inception module's
cost with and without dimension reductions."""

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers import ConvNormAct
from convzoo.layers.inception import Inception, NaiveInception, pad_to_size
from convzoo.models.base import AuxOutputs, classification_loss
from convzoo.models.googlenet import GOOGLENET_TABLE


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model(name, **kwargs))


def torchvision_googlenet(**kwargs) -> nn.Module:
    """torchvision's GoogLeNet with random weights and non-trivial batch-norm statistics, in eval mode."""
    model = torchvision.models.googlenet(weights=None, init_weights=True, **kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts


def test_parameter_counts_equal_torchvision():
    assert n_params("googlenet") == 13_004_888
    assert n_params("googlenet", aux_logits=False) == 6_624_904
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    assert sum(p.numel() for p in reference.parameters()) == 13_004_888


# Table 1 as the lecture notes print it: name, output size, output depth, #1x1, #3x3 reduce, #3x3, #5x5 reduce,
# #5x5, pool proj.
TABLE1 = [
    ("3a", 28, 256, 64, 96, 128, 16, 32, 32),
    ("3b", 28, 480, 128, 128, 192, 32, 96, 64),
    ("4a", 14, 512, 192, 96, 208, 16, 48, 64),
    ("4b", 14, 512, 160, 112, 224, 24, 64, 64),
    ("4c", 14, 512, 128, 128, 256, 24, 64, 64),
    ("4d", 14, 528, 112, 144, 288, 32, 64, 64),
    ("4e", 14, 832, 256, 160, 320, 32, 128, 128),
    ("5a", 7, 832, 256, 160, 320, 32, 128, 128),
    ("5b", 7, 1024, 384, 192, 384, 48, 128, 128),
]


def test_inception_table_is_table1():
    rows = [tuple(spec) for group in GOOGLENET_TABLE for spec in group]
    assert rows == [(name, *widths) for name, _, _, *widths in TABLE1]
    assert all(depth == c1 + c3 + c5 + pp for _, _, depth, c1, _, c3, _, c5, pp in TABLE1)


def table1_parameters(ch5x5_kernel: int, aux: bool) -> int:
    """GoogLeNet's parameters worked out from Table 1 alone: biased convolutions, no batch norm."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    chs, aux_inputs = 192, []
    for name, _, depth, c1, c3r, c3, c5r, c5, pp in TABLE1:
        total += conv(chs, c1, 1) + conv(chs, c3r, 1) + conv(c3r, c3, 3)
        total += conv(chs, c5r, 1) + conv(c5r, c5, ch5x5_kernel) + conv(chs, pp, 1)
        chs = depth
        if name in ("4a", "4d"):
            aux_inputs.append(chs)
    total += chs * 1000 + 1000
    if aux:  # section 5: 1x1 conv to 128, FC 1024 on the 4x4 grid, linear classifier
        total += sum(conv(c, 128, 1) + (128 * 16 * 1024 + 1024) + (1024 * 1000 + 1000) for c in aux_inputs)
    return total


def test_googlenet_2014_parameters_follow_from_table1():
    assert n_params("googlenet_2014", aux_logits=False) == table1_parameters(5, aux=False) == 6_998_552
    assert n_params("googlenet_2014") == table1_parameters(5, aux=True) == 13_378_280
    # With the 3x3 kernel torchvision uses in the "#5x5" column, and its batch norm in place of the biases.
    with torch.device("meta"):
        tv = convzoo.create_model("googlenet", aux_logits=False)
    convs = [m for m in tv.modules() if isinstance(m, nn.Conv2d)]
    bn_minus_bias = sum(m.out_channels for m in convs)  # BN adds a scale and a shift where the bias was
    assert n_params("googlenet", aux_logits=False) == table1_parameters(3, aux=False) + bn_minus_bias


# ---------------------------------------------------------------------------------------------------------------
# torchvision equivalence


@pytest.mark.parametrize("transform_input", [False, True])
def test_matches_torchvision_in_eval_mode(transform_input):
    torch.manual_seed(0)
    reference = torchvision_googlenet(aux_logits=True, transform_input=transform_input)
    ours = convzoo.create_model("googlenet", transform_input=transform_input).eval()
    convzoo.load_weights(ours, reference.state_dict())
    for size in (15, 64):  # the smallest input, and one where every stage has more than one pixel
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_matches_torchvision_in_training_mode_with_auxiliary_outputs():
    torch.manual_seed(0)
    reference = torchvision_googlenet(aux_logits=True).train()
    ours = convzoo.create_model("googlenet").train()
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)  # the same dropout masks: both draw them in the same order (aux1, aux2, main)
    expected = reference(x)
    torch.manual_seed(1)
    out = ours(x)
    assert isinstance(out, AuxOutputs)
    assert out.aux_weights == (0.3, 0.3)
    torch.testing.assert_close(out.logits, expected.logits, atol=1e-5, rtol=1e-5)
    # torchvision returns (logits, aux2, aux1); ours lists the auxiliary outputs from the earliest tap.
    torch.testing.assert_close(out.aux_logits[0], expected.aux_logits1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.aux_logits[1], expected.aux_logits2, atol=1e-5, rtol=1e-5)


def test_without_auxiliary_heads_matches_torchvision_and_loads_its_full_checkpoint():
    torch.manual_seed(0)
    reference = torchvision_googlenet(aux_logits=False)
    ours = convzoo.create_model("googlenet", aux_logits=False).eval()
    assert ours.aux1 is None and ours.aux2 is None
    assert set(ours.state_dict()) == set(reference.state_dict())
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
    # torchvision's checkpoints carry the auxiliary heads; a network built without them leaves them out.
    full = torchvision_googlenet(aux_logits=True)
    convzoo.load_weights(ours, full.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), full(x), atol=1e-5, rtol=1e-5)
    ours.train()
    assert isinstance(ours(x), torch.Tensor)


def test_torchvision_checkpoint_for_other_classes_loads_all_but_the_classifiers(tmp_path):
    torch.manual_seed(0)
    reference = torchvision_googlenet(aux_logits=True)
    path = tmp_path / "googlenet_tv.pth"
    torch.save(reference.state_dict(), path)
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        ours = convzoo.create_model("googlenet", weights=path, num_classes=10)
    assert ours.fc.out_features == ours.aux1.fc2.out_features == ours.aux2.fc2.out_features == 10
    torch.testing.assert_close(ours.aux1.fc1.weight, reference.aux1.fc1.weight)
    ours.eval()
    captured = {}
    reference.inception5b.register_forward_hook(lambda _m, _i, out: captured.setdefault("features", out))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference(x)
        torch.testing.assert_close(ours.forward_features(x), captured["features"], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Auxiliary classifiers


@pytest.mark.parametrize("name", ["googlenet", "googlenet_2014"])
def test_auxiliary_heads_run_only_in_training(name):
    model = convzoo.create_model(name, num_classes=5)
    calls = {"aux1": 0, "aux2": 0}
    for head in calls:
        getattr(model, head).register_forward_hook(lambda *_, head=head: calls.__setitem__(head, calls[head] + 1))
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([0, 3])
    model.train()
    out = model(x)
    assert isinstance(out, AuxOutputs) and calls == {"aux1": 1, "aux2": 1}
    assert [a.shape for a in out.aux_logits] == [(2, 5), (2, 5)] and out.aux_weights == (0.3, 0.3)
    expected = sum(
        w * nn.functional.cross_entropy(o, target)
        for o, w in zip((out.logits, *out.aux_logits), (1.0, *out.aux_weights))
    )
    torch.testing.assert_close(classification_loss(out, target), expected)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5)
    assert calls == {"aux1": 1, "aux2": 1}


def test_auxiliary_heads_sit_on_inception_4a_and_4d():
    model = convzoo.create_model("googlenet")
    assert model.aux1.conv.conv.in_channels == model.inception4a.out_chs == 512
    assert model.aux2.conv.conv.in_channels == model.inception4d.out_chs == 528
    assert model.aux1.dropout.p == 0.7 and model.dropout.p == 0.2
    assert convzoo.create_model("googlenet_2014").dropout.p == 0.4
    assert convzoo.create_model("googlenet", aux_weight=0.5).train()(torch.randn(2, 3, 32, 32)).aux_weights == (
        0.5,
        0.5,
    )


def test_paper_auxiliary_pool_is_5x5_stride_3_at_224():
    head = convzoo.create_model("googlenet_2014").aux1
    x = torch.randn(1, 512, 14, 14)
    torch.testing.assert_close(head.pool(x), nn.functional.avg_pool2d(x, 5, stride=3))
    assert head.pool(torch.randn(1, 512, 1, 1)).shape == (1, 512, 4, 4)  # zero-padded to 14x14 first
    assert head.pool(torch.randn(1, 512, 28, 28)).shape == (1, 512, 4, 4)


def test_pad_to_size_centres_the_map_in_zeros():
    x = torch.randn(1, 2, 3, 4)
    padded = pad_to_size(x, 6)
    assert padded.shape == (1, 2, 6, 6)
    torch.testing.assert_close(padded[..., 1:4, 1:5], x)
    assert padded.abs().sum() == x.abs().sum()
    assert pad_to_size(x, 3) is x


@pytest.mark.parametrize("name", ["googlenet", "googlenet_2014"])
def test_reset_classifier_resets_the_auxiliary_classifiers(name):
    model = convzoo.create_model(name).double()
    hidden = model.aux1.fc1.weight.detach().clone()
    model.reset_classifier(5)
    assert model.fc.out_features == model.aux1.fc2.out_features == model.aux2.fc2.out_features == 5
    assert model.aux1.fc2.weight.dtype == torch.float64
    torch.testing.assert_close(model.aux1.fc1.weight, hidden)  # the hidden layers are kept
    model.reset_classifier(0)
    assert model.aux1 is None and model.aux2 is None
    model.train()
    features = model(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert isinstance(features, torch.Tensor) and features.shape == (2, 1024)
    model.reset_classifier(3)
    out = model(torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert [t.shape for t in (out.logits, *out.aux_logits)] == [(2, 3)] * 3
    assert model.aux2.conv.conv.weight.dtype == torch.float64
    assert sum(p.numel() for p in model.parameters()) == n_params(name, num_classes=3)


def test_num_classes_zero_builds_no_classifiers():
    model = convzoo.create_model("googlenet", num_classes=0)
    assert model.aux1 is None and isinstance(model.fc, nn.Identity)
    assert model.train()(torch.randn(2, 3, 32, 32)).shape == (2, 1024)


# ---------------------------------------------------------------------------------------------------------------
# Table 1 and the paper's structure


# Table 1's output sizes at 224x224 (height = width, channels).
TABLE1_OUTPUTS = {
    "conv1": (112, 64),
    "maxpool1": (56, 64),
    "conv3": (56, 192),
    "maxpool2": (28, 192),
    "inception3a": (28, 256),
    "inception3b": (28, 480),
    "maxpool3": (14, 480),
    "inception4a": (14, 512),
    "inception4b": (14, 512),
    "inception4c": (14, 512),
    "inception4d": (14, 528),
    "inception4e": (14, 832),
    "maxpool4": (7, 832),
    "inception5a": (7, 832),
    "inception5b": (7, 1024),
    "avgpool": (1, 1024),
}


@pytest.mark.parametrize("name", ["googlenet", "googlenet_2014"])
def test_output_sizes_follow_table1(name):
    with torch.device("meta"):  # shapes only
        model = convzoo.create_model(name).eval()
    shapes = {}
    for module_name in TABLE1_OUTPUTS:
        getattr(model, module_name).register_forward_hook(
            lambda _m, _i, out, key=module_name: shapes.__setitem__(key, (out.shape[-1], out.shape[1]))
        )
    model(torch.randn(1, 3, 224, 224, device="meta"))
    assert shapes == TABLE1_OUTPUTS


def test_googlenet_2014_is_the_network_of_the_paper():
    paper = convzoo.create_model("googlenet_2014")
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert paper.maxpool4.kernel_size == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert {m.bias is not None for m in paper.modules() if isinstance(m, nn.Conv2d)} == {True}
    assert [type(paper.norm1), type(paper.norm2)] == [nn.LocalResponseNorm] * 2
    assert (paper.norm1.size, paper.norm1.alpha, paper.norm1.beta) == (5, 1e-4, 0.75)
    # The Caffe replication's initialisation: 0.2 biases, zero biases on the classifiers.
    assert torch.all(paper.inception4a.branch1.conv.bias == 0.2) and torch.all(paper.aux1.fc1.bias == 0.2)
    assert torch.all(paper.fc.bias == 0) and torch.all(paper.aux2.fc2.bias == 0)
    tv = convzoo.create_model("googlenet")
    assert tv.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert tv.maxpool4.kernel_size == 2
    assert {m.eps for m in tv.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert {m.bias is None for m in tv.modules() if isinstance(m, nn.Conv2d)} == {True}


def test_googlenet_2014_is_22_layers_deep_and_27_with_pooling():
    """Section 5: "22 layers deep when counting only layers with parameters (or 27 layers if we also count pooling)"."""
    model = convzoo.create_model("googlenet_2014", aux_logits=False)
    stem_convs = [m for m in (model.conv1, model.conv2, model.conv3) if isinstance(m, ConvNormAct)]
    modules = [m for m in model.modules() if isinstance(m, Inception)]
    # An Inception module is two layers deep: its longest branches are a 1x1 then a 3x3 or 5x5 convolution.
    module_depth = {
        max(sum(isinstance(m, ConvNormAct) for m in branch.modules()) for branch in block.children())
        for block in modules
    }
    assert module_depth == {2}
    depth = len(stem_convs) + 2 * len(modules) + 1  # + the classifier
    pools = [m for n, m in model.named_children() if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    assert (len(modules), depth, depth + len(pools)) == (9, 22, 27)


# Table 1's "ops" column in millions. The paper's conv1 row (2.7K parameters, 34M ops) does not fit a 7x7x3x64
# convolution (9.4K weights, 118M multiply-adds at 112x112), and its inception (5a) row says 54M where its own
# filter counts give 51.1M; those two rows are errata.
TABLE1_OPS = {
    "inception3a": 128,
    "inception3b": 304,
    "inception4a": 73,
    "inception4b": 88,
    "inception4c": 100,
    "inception4d": 119,
    "inception4e": 170,
    "inception5b": 71,
    "fc": 1,
}


def test_googlenet_2014_multiply_adds_follow_table1_ops_column():
    with torch.device("meta"):
        model = convzoo.create_model("googlenet_2014")
    rows = {r.name: r.macs for r in convzoo.summary(model, (3, 224, 224), depth=1, device="meta").rows}
    for name, ops in TABLE1_OPS.items():
        assert abs(rows[name] / 1e6 - ops) < 1, (name, rows[name])
    # The stem's second row (3x3 reduce 64, then 3x3 192): 360M.
    assert round((rows["conv2"] + rows["conv3"]) / 1e6) == 360
    assert round(rows["inception5a"] / 1e6, 1) == 51.1 and rows["conv1"] == 118_013_952


def test_multiply_adds_equal_torchvision_figure():
    # torchvision's documentation lists 1.498 GFLOPS (multiply-adds) for its GoogLeNet at 224x224.
    with torch.device("meta"):
        model = convzoo.create_model("googlenet")
    assert round(convzoo.count_macs(model, (3, 224, 224), device="meta") / 1e9, 3) == 1.498


# ---------------------------------------------------------------------------------------------------------------
# The Inception module: naive against dimension-reduced (seed 004's example)


def test_inception_module_costs_naive_against_bottleneck():
    """At 28x28x256 with 128 1x1, 192 3x3 and 96 5x5 filters: 854M multiply-adds naive, 271M with 64-wide reductions.

    The lecture slide prints 358M for the reduced module, but its six listed terms add up to 271,351,808; 358M
    (358,055,936) is what they give with the 3x3 convolution's 86.7M counted twice.
    """
    naive = NaiveInception(256, 128, 192, 96)
    reduced = Inception(256, 128, 64, 192, 64, 96, 64)
    assert naive.out_chs == 128 + 192 + 96 + 256 == 672  # the slide's 28x28x672: the pool branch keeps 256
    assert reduced.out_chs == 128 + 192 + 96 + 64 == 480
    with torch.no_grad():
        assert naive(torch.randn(1, 256, 28, 28)).shape == (1, 672, 28, 28)
        assert reduced(torch.randn(1, 256, 28, 28)).shape == (1, 480, 28, 28)

    grid = 28 * 28
    naive_terms = [grid * 128 * 1 * 1 * 256, grid * 192 * 3 * 3 * 256, grid * 96 * 5 * 5 * 256]
    reduced_terms = {
        "branch2.0": grid * 64 * 1 * 1 * 256,  # [1x1 conv, 64] before the 3x3
        "branch3.0": grid * 64 * 1 * 1 * 256,  # [1x1 conv, 64] before the 5x5
        "branch1": grid * 128 * 1 * 1 * 256,  # [1x1 conv, 128]
        "branch2.1": grid * 192 * 3 * 3 * 64,  # [3x3 conv, 192]
        "branch3.1": grid * 96 * 5 * 5 * 64,  # [5x5 conv, 96]
        "branch4.1": grid * 64 * 1 * 1 * 256,  # [1x1 conv, 64] after the pool
    }
    naive_macs = convzoo.count_macs(naive, (256, 28, 28))
    reduced_macs = convzoo.count_macs(reduced, (256, 28, 28))
    assert naive_macs == sum(naive_terms) == 854_196_224
    assert round(naive_macs / 1e6) == 854
    rows = {r.name: r.macs for r in convzoo.summary(reduced, (256, 28, 28), depth=2).rows}
    assert {name: rows[name] for name in reduced_terms} == reduced_terms
    assert reduced_macs == sum(reduced_terms.values()) == 271_351_808
    assert reduced_macs + reduced_terms["branch2.1"] == 358_055_936  # the slide's total
    assert naive_macs / reduced_macs > 3.1


def test_inception_module_needs_an_odd_kernel():
    with pytest.raises(ValueError, match="odd kernel"):
        Inception(64, 8, 8, 8, 8, 8, 8, ch5x5_kernel=4)


# ---------------------------------------------------------------------------------------------------------------
# Feature maps, input sizes, configurations


@pytest.mark.parametrize("name", ["googlenet", "googlenet_2014"])
def test_feature_info(name):
    with torch.device("meta"):  # shapes only
        model = convzoo.create_model(name).eval()
    info = model.feature_info
    modules = dict(model.named_modules())
    assert len(info) == 5 and {f.module for f in info} <= set(modules)
    assert [f.num_chs for f in info] == [64, 192, 480, 832, 1024]
    assert [f.reduction for f in info] == [2, 4, 8, 16, 32]
    assert [f.module for f in info][2:] == ["inception3b", "inception4e", "inception5b"]
    maps = model.forward_intermediates(torch.randn(1, 3, 224, 224, device="meta"))
    larger = model.forward_intermediates(torch.randn(1, 3, 256, 256, device="meta"))
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14, 7]
    # The reduction is the cumulative stride: 32 more input pixels give 32 / reduction more map pixels.
    assert [b.shape[-1] - m.shape[-1] for m, b in zip(maps, larger)] == [32 // f.reduction for f in info]


def test_minimum_input_size_is_the_true_minimum():
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).eval()
    with torch.no_grad():
        reference(torch.randn(1, 3, 15, 15))
        with pytest.raises(RuntimeError):
            reference(torch.randn(1, 3, 14, 14))
    for name, smallest in (("googlenet", 15), ("googlenet_2014", 31)):
        model = convzoo.create_model(name)
        assert model.min_input_size == smallest
        for mode in (model.train, model.eval):
            mode()
            with torch.no_grad():
                model(torch.randn(2, 3, smallest, smallest))
        with pytest.raises(ValueError, match=rf"{name} needs images of at least {smallest}x{smallest}"):
            model(torch.randn(1, 3, smallest - 1, smallest))
        model.min_input_size = 1  # without the check, the network itself fails one pixel below
        with pytest.raises(RuntimeError), torch.no_grad():
            model(torch.randn(1, 3, smallest - 1, smallest - 1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ch5x5_kernel": 7}, "ch5x5_kernel must be 5"),
        ({"last_pool_kernel": 4}, "last_pool_kernel must be 3"),
        ({"aux_pool": "max"}, "unknown aux_pool 'max'"),
        ({"drop_rate": 1.0}, r"drop_rate and aux_drop_rate must lie in \[0, 1\)"),
        ({"aux_weight": -0.3}, "aux_weight must be non-negative"),
        ({"transform_input": True, "in_chans": 1}, "transform_input maps RGB ImageNet statistics"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"googlenet: {message}"):
        convzoo.create_model("googlenet", **overrides)


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(TypeError, match=r"googlenet_2014 got unexpected keyword argument\(s\) 'aux_logit' "):
        convzoo.create_model("googlenet_2014", aux_logit=False)


def test_in_chans_and_wrong_input():
    model = convzoo.create_model("googlenet", in_chans=1, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 1, H, W\)"):
        model(torch.randn(2, 3, 32, 32))


def test_model_cards():
    card = convzoo.get_model_card("googlenet")
    assert card.paper.year == 2015 and card.paper.venue == "CVPR" and card.input_size == (3, 224, 224)
    assert [(r.value, r.source) for r in card.reported] == [(10.07, "Table 3"), (6.67, "Table 2")]
    assert "3x3" in card.notes and "batch norm" in card.notes
    assert convzoo.get_model_card("googlenet_2014").reported == card.reported


# ---------------------------------------------------------------------------------------------------------------
# Golden outputs of googlenet_2014 (no peer ships the paper's network)


def googlenet_2014_outputs() -> dict[str, list]:
    torch.manual_seed(0)
    model = convzoo.create_model("googlenet_2014", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    return {
        "eval_logits_64": logits.tolist(),
        "train_logits_224": out.logits.tolist(),
        "train_aux1_224": out.aux_logits[0].tolist(),
        "train_aux2_224": out.aux_logits[1].tolist(),
    }


def test_googlenet_2014_golden_outputs(golden):
    golden("googlenet_2014", {key: torch.tensor(value) for key, value in googlenet_2014_outputs().items()})


# Table 1's "params" column, in thousands (seed 001). conv1's 2.7K is an erratum (see TABLE1_OPS above), and so is
# inception (4c)'s 463K: its own filter counts (128; 128->256; 24->64; 64 from 512 inputs) give 509K weights.
TABLE1_PARAMS = {
    "inception3a": 159,
    "inception3b": 380,
    "inception4a": 364,
    "inception4b": 437,
    "inception4d": 580,
    "inception4e": 840,
    "inception5a": 1072,
    "inception5b": 1388,
    "fc": 1000,
}


def test_googlenet_2014_parameters_per_layer_within_5_percent_of_table1():
    rows = {r.name: r.params for r in convzoo.summary("googlenet_2014", (3, 224, 224), depth=1).rows}
    for name, thousands in TABLE1_PARAMS.items():
        assert abs(rows[name] / 1e3 - thousands) <= 0.05 * thousands, (name, rows[name])
    assert abs((rows["conv2"] + rows["conv3"]) / 1e3 - 112) <= 0.05 * 112
    weights_4c = 512 * 128 + 512 * 128 + 128 * 256 * 9 + 512 * 24 + 24 * 64 * 25 + 512 * 64
    assert rows["inception4c"] == weights_4c + (128 + 128 + 256 + 24 + 64 + 64) == 510_104
