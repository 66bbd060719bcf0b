"""The AlexNet family: torchvision's AlexNet exactly, the paper's two-tower network (its layer sizes, parameters,
normalisation and tower separation), ZFNet's Figure 3, true minimum input sizes and golden outputs."""

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers.lrn import LocalResponseNorm


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return convzoo.create_model(name, **kwargs)


def meta_shapes(model: nn.Module, size: int) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(t.shape[1:]) for t in model.forward_intermediates(torch.empty(1, 3, size, size, device="meta"))]


@pytest.fixture(scope="module")
def alexnet_2012():
    torch.manual_seed(0)
    return convzoo.create_model("alexnet_2012", num_classes=10).eval()


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts and layer sizes


def test_parameter_counts():
    assert convzoo.count_params(on_meta("alexnet")) == 61_100_840  # torchvision's
    # The paper's "60 million": two towers, conv2, conv4 and conv5 within a tower, conv3 and the FC layers across.
    assert convzoo.count_params(on_meta("alexnet_2012")) == 60_965_224
    assert convzoo.count_params(on_meta("zfnet")) == 107_627_624
    assert convzoo.count_params(on_meta("zfnet", widths=(96, 256, 384, 384, 256))) == 62_357_608


def test_alexnet_2012_layers_of_the_paper():
    model = on_meta("alexnet_2012")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    # conv1: (11 x 11 x 3) x 96 weights + 96 biases = 34,944, the figure of the lecture's worked example.
    assert [n_params(c) for c in convs] == [34_944, 307_456, 885_120, 663_936, 442_624]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (11, 4, 0),
        (5, 1, 2),
        (3, 1, 1),
        (3, 1, 1),
        (3, 1, 1),
    ]
    assert [n_params(f) for f in fcs] == [37_752_832, 16_781_312, 4_097_000]
    assert fcs[0].in_features == 6 * 6 * 256 == 9216
    # Section 3.5's order: ReLU, response normalisation, then overlapping 3x3/2 max-pooling.
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"] * 2
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3
    # Dropout 0.5 on the outputs of fc6 and fc7.
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_alexnet_2012_map_sizes_on_227():
    model = on_meta("alexnet_2012")
    # conv1 (227 - 11) / 4 + 1 = 55; pool1 (55 - 3) / 2 + 1 = 27; pool2 13; pool5 6.
    assert meta_shapes(model, 227) == [(96, 55, 55), (256, 27, 27), (256, 13, 13), (256, 6, 6)]
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]
    assert convzoo.get_model_card("alexnet_2012").input_size == (3, 227, 227)


def test_zfnet_map_sizes_of_figure_3():
    model = on_meta("zfnet")
    # 7x7 stride-2 conv1 gives 110x110 maps, pooled to 55x55 and normalised; 5x5 stride-2 conv2 gives 26x26, pooled
    # to 13x13; conv3-5 keep 13x13; the last pooling gives 6x6.
    assert meta_shapes(model, 224) == [(96, 110, 110), (96, 55, 55), (256, 26, 26), (512, 13, 13), (512, 6, 6)]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (96, 7, 2),
        (256, 5, 2),
        (512, 3, 1),
        (1024, 3, 1),
        (512, 3, 1),
    ]
    assert [c.groups for c in convs] == [1] * 5  # one tower: dense connections in layers 3, 4 and 5
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:8] == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm"] * 2  # pooled, then normalised
    fig3 = on_meta("zfnet", widths=(96, 256, 384, 384, 256))
    assert meta_shapes(fig3, 224)[-1] == (256, 6, 6) and fig3.classifier[0].in_features == 9216


@pytest.mark.parametrize(("name", "minimum"), [("alexnet", 63), ("alexnet_2012", 67), ("zfnet", 47)])
def test_min_input_size_is_the_true_minimum(name, minimum):
    model = on_meta(name)
    assert model.min_input_size == minimum
    assert meta_shapes(model, minimum)[-1][-1] == 1
    with pytest.raises(RuntimeError):
        model.features(torch.empty(1, 3, minimum - 1, minimum - 1, device="meta"))
    with pytest.raises(ValueError, match=rf"{name} needs images of at least {minimum}x{minimum}.*got {minimum - 1}x"):
        model(torch.empty(1, 3, minimum - 1, 227, device="meta"))
    if name == "alexnet":
        with torch.device("meta"):
            reference = torchvision.models.alexnet().features
            assert reference(torch.empty(1, 3, 63, 63)).shape[-1] == 1
            with pytest.raises(RuntimeError):
                reference(torch.empty(1, 3, 62, 62))


# ---------------------------------------------------------------------------------------------------------------
# The two towers and the normalisation


def test_towers_are_separate_where_the_paper_says(alexnet_2012):
    f = alexnet_2012.features

    def tower_gradients(layers: nn.Sequential, in_chs: int, size: int) -> tuple[float, float]:
        x = torch.randn(1, in_chs, size, size, requires_grad=True)
        out = layers(x)
        out[:, out.shape[1] // 2 :].sum().backward()  # tower B's outputs
        half = in_chs // 2
        return x.grad[:, :half].abs().sum().item(), x.grad[:, half:].abs().sum().item()

    # conv2 with its ReLU, normalisation and pooling reads only its own tower's conv1 maps ...
    other, own = tower_gradients(f[4:8], 96, 27)
    assert other == 0 and own > 0
    # ... and so do conv4 and conv5, up to pool5.
    other, own = tower_gradients(f[10:15], 384, 13)
    assert other == 0 and own > 0
    # conv3 reads both towers.
    other, own = tower_gradients(f[8:10], 256, 13)
    assert other > 0 and own > 0
    # Each tower normalises its own maps: map 47 (tower A's last) does not reach map 48 (tower B's first).
    x = torch.rand(1, 96, 5, 5) * 10
    bumped = x.clone()
    bumped[:, 47] += 5.0
    lrn = f[2]
    with torch.no_grad():
        delta = (lrn(bumped) - lrn(x)).abs().amax(dim=(0, 2, 3))
    assert delta[48] == 0 and delta[46] > 0


def test_two_towers_save_the_cross_tower_weights():
    one_tower = convzoo.count_params(on_meta("alexnet_2012", towers=1))
    # Grouping halves the weights of conv2, conv4 and conv5; biases are unchanged.
    saved = 256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9
    assert one_tower - convzoo.count_params(on_meta("alexnet_2012")) == saved


def test_local_response_normalisation_is_the_papers_formula():
    torch.manual_seed(0)
    # Large activities, so that the alpha term matters as it does after a ReLU on unnormalised inputs.
    a = torch.rand(2, 7, 3, 3) * 100
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = torch.empty_like(a)
    for i in range(7):
        window = a[:, max(0, i - n // 2) : min(7, i + n // 2 + 1)]
        expected[:, i] = a[:, i] / (k + alpha * (window**2).sum(1)) ** beta
    torch.testing.assert_close(LocalResponseNorm(n, alpha, beta, k)(a), expected)
    # torch.nn.LocalResponseNorm averages the squares: the paper's constants need alpha * n there.
    torch.testing.assert_close(nn.LocalResponseNorm(n, alpha * n, beta, k)(a), expected)
    assert not torch.allclose(nn.LocalResponseNorm(n, alpha, beta, k)(a), expected)
    with pytest.raises(ValueError, match="7 channels do not split into 2 equal groups"):
        LocalResponseNorm(groups=2)(a)


def test_paper_initialisation(alexnet_2012):
    convs = [m for m in alexnet_2012.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in alexnet_2012.classifier if isinstance(m, nn.Linear)]
    # Section 5: N(0, 0.01) weights; biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere.
    assert [c.bias.unique().tolist() for c in convs] == [[0.0], [1.0], [0.0], [1.0], [1.0]]
    assert [f.bias.unique().tolist() for f in fcs] == [[1.0], [1.0], [0.0]]
    assert abs(fcs[0].weight.std().item() - 0.01) < 1e-4


def test_without_normalisation_is_the_ablation():
    model = on_meta("alexnet_2012", lrn=False)
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())
    assert convzoo.count_params(model) == 60_965_224


# ---------------------------------------------------------------------------------------------------------------
# torchvision's AlexNet


def test_matches_torchvision_and_loads_its_checkpoint_for_other_classes():
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    with torch.no_grad():  # give the biases values, so that each one must load
        for m in reference.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(-0.05, 0.05)
    ours = on_meta("alexnet").to_empty(device="cpu").eval()
    assert list(ours.state_dict()) == list(reference.state_dict())
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
    # Fine-tuning from torchvision's checkpoint: everything but the output layer loads, fc6 and fc7 included.
    small = on_meta("alexnet", num_classes=10).to_empty(device="cpu")
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        convzoo.load_weights(small, reference.state_dict(), skip_classifier="auto")
    assert torch.equal(small.classifier[4].weight, reference.classifier[4].weight)
    assert small.get_classifier() is small.classifier[6] and small.classifier[6].out_features == 10


def test_head_reset_keeps_hidden_layers_and_no_classifier_leaves_the_pooled_map():
    torch.manual_seed(0)
    model = convzoo.create_model("alexnet_2012", hidden=(32, 32), num_classes=10).eval()
    x = torch.randn(2, 3, 67, 67)
    fc6 = model.classifier[0]
    with torch.no_grad():
        features = model.forward_features(x)
        # The transferable feature is fc7, the last hidden layer the output layer reads.
        fc7 = model.forward_head(features, pre_logits=True)
        assert model.head_hidden_size == 32 and fc7.shape == (2, 32) and (fc7 >= 0).all()
        torch.testing.assert_close(model.classifier[6](fc7), model(x))
        model.reset_classifier(5)
        assert model.classifier[0] is fc6 and model(x).shape == (2, 5)
        assert model.classifier[6].bias.abs().sum() == 0  # a fresh output layer, initialised as the paper's
        model.reset_classifier(0)
        assert model.get_classifier() is model.classifier and n_params(model.classifier) == 0
        torch.testing.assert_close(model(x), features.mean((2, 3)))
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean((2, 3)))
        model.reset_classifier(3)
        assert model.classifier[0] is not fc6 and model.classifier[0].bias.unique().tolist() == [1.0]
        assert model(x).shape == (2, 3)


# ---------------------------------------------------------------------------------------------------------------
# Configuration checks, cards and golden outputs


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (
            "alexnet_2012",
            {"towers": 3},
            r"every layer's filters must split evenly into 3 towers; \[256, 256\] do not",
        ),
        ("alexnet", {"widths": (64, 192, 384)}, r"widths needs one filter count per convolution \(5\); got 3"),
        ("zfnet", {"drop_rate": 1.0}, r"drop_rate must lie in \[0, 1\)"),
        ("alexnet", {"hidden": ()}, "hidden needs one or more positive widths"),
    ],
)
def test_impossible_configurations_fail_at_construction(name, overrides, message):
    with pytest.raises(ValueError, match=f"{name}: {message}"):
        on_meta(name, **overrides)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="zfnet got unexpected keyword argument.*'tower'.*did you mean 'towers'"):
        on_meta("zfnet", tower=2)


def test_cards():
    card = convzoo.get_model_card("alexnet_2012")
    assert card.paper.year == 2012 and card.paper.venue == "NIPS"
    assert [(r.metric, r.value, r.source) for r in card.reported] == [
        ("top-1 error", 40.7, "Table 2"),
        ("top-5 error", 18.2, "Table 2"),
        ("top-1 error", 37.5, "Table 1"),
        ("top-5 error", 17.0, "Table 1"),
    ]
    zf = convzoo.get_model_card("zfnet")
    assert zf.paper.venue == "ECCV" and [(r.value, r.source) for r in zf.reported] == [
        (37.5, "Table 2"),
        (16.0, "Table 2"),
        (16.1, "Table 2"),
    ]
    assert convzoo.get_model_card("alexnet").reported == () and "61,100,840" in convzoo.get_model_card("alexnet").notes


def golden_outputs(model: nn.Module, size: int) -> dict[str, list]:
    # Mean-subtracted pixels on the 0-255 scale, as both papers feed them: large enough for the response
    # normalisation to act (on unit-variance inputs it is nearly a constant factor).
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 100
    with torch.no_grad():
        features = model.forward_features(x)
        return {"logits": model.forward_head(features), "pooled": features.mean((2, 3))[:, :16]}


def test_alexnet_2012_golden_outputs(alexnet_2012, golden):
    golden("alexnet_2012", golden_outputs(alexnet_2012, 99))


def test_zfnet_golden_outputs(golden):
    torch.manual_seed(0)
    model = convzoo.create_model("zfnet", num_classes=10).eval()
    golden("zfnet", golden_outputs(model, 79))
