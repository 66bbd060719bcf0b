"""SqueezeNet 1.0 and 1.1: Table 1 of the paper, torchvision equivalence, the true minimum input, the conv10 head."""

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers.trunk import map_size as output_size
from convzoo.models.squeezenet import Fire

NAMES = ["squeezenet1_0", "squeezenet1_1"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    # 1,248,424 is Table 1's total before pruning and torchvision's squeezenet1_0; 1,235,496 is torchvision's 1_1.
    assert convzoo.count_params(convzoo.create_model("squeezenet1_0")) == 1_248_424
    assert convzoo.count_params(convzoo.create_model("squeezenet1_1")) == 1_235_496


def test_per_layer_parameters_and_map_sizes_of_table_1():
    model = convzoo.create_model("squeezenet1_0").eval()
    fires = [m for m in model.features if isinstance(m, Fire)]
    assert n_params(model.features[0]) == 14_208  # conv1
    assert [n_params(f) for f in fires] == [11_920, 12_432, 45_344, 49_440, 104_880, 111_024, 188_992, 197_184]
    assert n_params(model.final_conv) == 513_000  # conv10
    assert [(f.squeeze.out_channels, f.expand1x1.out_channels, f.expand3x3.out_channels) for f in fires][-1] == (
        64,
        256,
        256,
    )
    # Table 1's activations: conv1 111x111, fire2-4 55x55, fire5-8 27x27, fire9 13x13, from a 227x227 crop.
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 227, 227))
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 111, 111), (256, 55, 55), (512, 27, 27), (512, 13, 13)]
    assert convzoo.get_model_card("squeezenet1_0").input_size == (3, 227, 227)


def test_version_1_1_changes_conv1_and_pools_earlier():
    v10, v11 = (convzoo.create_model(n) for n in NAMES)
    assert (v11.features[0].out_channels, v11.features[0].kernel_size) == (64, (3, 3))
    pools = [i for i, m in enumerate(v11.features) if isinstance(m, nn.MaxPool2d)]
    assert pools == [2, 5, 8]  # after conv1, fire3 and fire5 (v1.0: after conv1, fire4 and fire8)
    assert [i for i, m in enumerate(v10.features) if isinstance(m, nn.MaxPool2d)] == [2, 6, 11]
    with torch.device("meta"):
        cheap, dear = (convzoo.count_macs(convzoo.create_model(n), (3, 224, 224)) for n in reversed(NAMES))
    assert (dear, cheap) == (818_924_576, 349_151_936)  # 2.35x fewer multiply-adds


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchvision(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():  # torchvision starts every bias at zero: give them values so that each must load
        for m in reference.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.05, 0.05)
    ours = convzoo.create_model(name).eval()
    convzoo.load_weights(ours, reference.state_dict())
    assert convzoo.count_params(ours) == n_params(reference)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_torchvision_checkpoint_through_weights_argument(tmp_path):
    reference = torchvision.models.squeezenet1_1(weights=None).eval()
    path = tmp_path / "squeezenet1_1_tv.pth"
    torch.save(reference.state_dict(), path)
    ours = convzoo.create_model("squeezenet1_1", weights=path).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning, match="classifier has another number of classes"):
        small = convzoo.create_model("squeezenet1_1", weights=path, num_classes=10).eval()
    assert small.final_conv.out_channels == 10
    torch.testing.assert_close(small.features[3].squeeze.weight, reference.features[3].squeeze.weight)
    # Our own keys pass through the remapping unchanged.
    assert ours.remap_state_dict(ours.state_dict()).keys() == ours.state_dict().keys()


@pytest.mark.parametrize(("name", "minimum"), [("squeezenet1_0", 21), ("squeezenet1_1", 17)])
def test_min_input_size_is_the_true_minimum(name, minimum):
    model = convzoo.create_model(name).eval()
    assert model.min_input_size == minimum
    reference = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, minimum, minimum)).shape == (1, 1000)
        reference(torch.randn(1, 3, minimum, minimum))
        # One pixel less and the last max-pool has no window left, in torchvision's network as in ours.
        with pytest.raises(RuntimeError):
            reference(torch.randn(1, 3, minimum - 1, minimum - 1))
        with pytest.raises(RuntimeError):
            model.features(torch.randn(1, 3, minimum - 1, minimum - 1))
    with pytest.raises(ValueError, match=rf"{name} needs images of at least {minimum}x{minimum}.*got"):
        model(torch.randn(1, 3, minimum - 1, 64))
    assert output_size(model.features, minimum) == 1 and output_size(model.features, minimum - 1) < 1


@pytest.mark.parametrize("name", NAMES)
def test_feature_maps_grow_by_one_step_per_reduction(name):
    # Unpadded conv1 and ceil-mode pools make the maps differ from ceil(size / reduction), but one more step of
    # the coarsest map adds exactly reduction_max / reduction positions to every tap.
    with torch.device("meta"):
        model = convzoo.create_model(name).eval()
        step = model.feature_info[-1].reduction
        small = model.forward_intermediates(torch.empty(1, 3, 45, 45))
        big = model.forward_intermediates(torch.empty(1, 3, 45 + step, 45 + step))
    for info, a, b in zip(model.feature_info, small, big):
        upto = int(info.module.split(".")[1]) + 1
        assert a.shape[-1] == output_size(model.features[:upto], 45) <= -(-45 // info.reduction), info
        assert b.shape[-1] - a.shape[-1] == step // info.reduction, info


def test_head_is_conv10_relu_and_global_average():
    torch.manual_seed(0)
    model = convzoo.create_model("squeezenet1_1", num_classes=5).eval()
    assert model.get_classifier() is model.final_conv and model.num_features == 512
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        evidence = torch.relu(model.final_conv(features))  # one map per class, then the average
        torch.testing.assert_close(model(x), evidence.mean((2, 3)))
        assert (model(x) >= 0).all()
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean((2, 3)))
        model.reset_classifier(3)
        assert isinstance(model.final_conv, nn.Conv2d) and model.final_conv.out_channels == 3
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), features.mean((2, 3)))


def test_simple_bypass_of_section_6():
    plain = convzoo.create_model("squeezenet1_0")
    bypass = convzoo.create_model("squeezenet1_0", bypass=True)
    # Parameter-free shortcuts around fire3, fire5, fire7 and fire9, the modules whose widths match.
    assert convzoo.count_params(bypass) == convzoo.count_params(plain)
    assert [f.bypass for f in bypass.features if isinstance(f, Fire)] == [False, True, False, True] * 2
    bypass.load_state_dict(plain.state_dict())
    fire3, x = bypass.features[4].eval(), torch.randn(1, 128, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fire3(x), plain.features[4](x) + x)
    with pytest.raises(ValueError, match="a bypass needs equal input and output widths; got 96 -> 128"):
        Fire(96, 16, 64, 64, bypass=True)


def test_bad_configurations_and_keywords():
    with pytest.raises(ValueError, match=r"squeezenet1_0: each entry of layers is 'M' or \(squeeze"):
        convzoo.create_model("squeezenet1_0", layers=[(16, 64, 64), "X"])
    with pytest.raises(ValueError, match="squeezenet1_1: layers holds no Fire module"):
        convzoo.create_model("squeezenet1_1", layers=["M"])
    with pytest.raises(TypeError, match="squeezenet1_1 got unexpected keyword argument.*'dropout'.*accepted keys"):
        convzoo.create_model("squeezenet1_1", dropout=0.2)


def test_cards():
    card = convzoo.get_model_card("squeezenet1_0")
    assert card.top1_accuracy() == 57.5 and card.paper.year == 2016
    assert [(r.metric, r.value, r.source) for r in card.reported] == [
        ("top-1 accuracy", 57.5, "Table 2"),
        ("top-5 accuracy", 80.3, "Table 2"),
    ]
    assert convzoo.get_model_card("squeezenet1_1").reported == ()
