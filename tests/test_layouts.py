"""Third-party checkpoint layouts: the PyTorch CIFAR ResNets' keys and padding, timm's ResNetV2 keys, and what a
checkpoint that fits no layout is reported to look like."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convzoo
from convzoo.layers import ZeroPadShortcut
from convzoo.layouts import KeyLayout, detect_layout, get_layout, list_layouts
from convzoo.weights import WeightsError

CIFAR_LAYOUT = "pytorch-resnet-cifar10"


class RefBlock(nn.Module):
    """The reimplementation's basic block: conv1/bn1/conv2/bn2, and a shortcut that pads zero channels on both
    sides of the subsampled input (option A) or projects it with conv + batch norm (option B)."""

    def __init__(self, in_planes: int, planes: int, stride: int, option: str, pad: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.project = None
        self.zeros = None
        if stride != 1 or in_planes != planes:
            if option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            else:
                extra = planes - in_planes
                self.zeros = (extra // 2, extra - extra // 2) if pad == "split" else (0, extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "shortcut"):
            short = self.shortcut(x)
        elif self.zeros is not None:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.zeros))
        else:
            short = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + short)


class RefCifarResNet(nn.Module):
    """The reimplementation's network: conv1/bn1, three stages of 6n+2 layers' blocks, average pool, `linear`."""

    def __init__(self, depth: int, option: str = "A", pad: str = "split", num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(RefBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1, option, pad))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def trained_looking(net: nn.Module) -> nn.Module:
    """Random batch-norm statistics and affine parameters, so that every tensor changes the outputs."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.num_batches_tracked.fill_(7)
    return net.eval()


def save_reference(net: nn.Module, path, *, counters: bool = True):
    """Save as the reimplementation's trainer does: DataParallel keys under 'state_dict', with 'best_prec1'."""
    state = {f"module.{k}": v for k, v in net.state_dict().items() if counters or "num_batches_tracked" not in k}
    # The saved best accuracy is a tensor, as that trainer stores it.
    torch.save({"state_dict": state, "best_prec1": torch.tensor(91.25)}, path)
    return path


def outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These networks are tiny: one thread is faster than two, and far faster when other work holds the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reference_checkpoint_loads_through_create_model(tmp_path):
    ref = trained_looking(RefCifarResNet(20))
    path = save_reference(ref, tmp_path / "resnet20.th")
    with pytest.warns(UserWarning, match=r"'pytorch-resnet-cifar10' layout.*pad_channels: 'after' -> 'split'"):
        model = convzoo.create_model("resnet20", weights=path)
    assert model.cfg.pad_channels == "split"
    assert all(m.pad_channels == "split" for m in model.modules() if isinstance(m, ZeroPadShortcut))
    torch.testing.assert_close(outputs(model, X), outputs(ref, X), atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_reference_checkpoints_load_with_the_layout_name(tmp_path, depth):
    ref = trained_looking(RefCifarResNet(depth))
    path = save_reference(ref, tmp_path / f"resnet{depth}.th")
    model = convzoo.create_model(f"resnet{depth}", pad_channels="split")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model already pads the checkpoint's way: nothing to warn about
        convzoo.load_weights(model, path, layout=CIFAR_LAYOUT)
    torch.testing.assert_close(outputs(model, X), outputs(ref, X), atol=1e-5, rtol=0)
    translated = get_layout(CIFAR_LAYOUT).translate(ref.state_dict(), model.state_dict())
    assert translated.keys() == model.state_dict().keys()


def test_the_default_convention_pads_after_and_is_unchanged():
    torch.manual_seed(0)
    default = convzoo.create_model("resnet20")
    assert default.cfg.pad_channels == "after"
    x = torch.randn(1, 16, 8, 8)
    after = ZeroPadShortcut(16, 32, 2)(x)
    split = ZeroPadShortcut(16, 32, 2, pad_channels="split")(x)
    assert torch.equal(after[:, :16], x[:, :, ::2, ::2]) and not after[:, 16:].any()
    assert torch.equal(split[:, 8:24], x[:, :, ::2, ::2]) and not split[:, :8].any() and not split[:, 24:].any()
    # A reference network padding after the input (Torch's CIFAR code) equals the default model, key for key.
    ref_after = trained_looking(RefCifarResNet(20, pad="after"))
    state = {k.replace("linear.", "fc."): v for k, v in ref_after.state_dict().items()}
    convzoo.load_weights(default, state, layout=None)
    assert default.cfg.pad_channels == "after"
    torch.testing.assert_close(outputs(default, X), outputs(ref_after, X), atol=1e-5, rtol=0)
    # ... and the same weights under the other convention give other outputs: the convention matters.
    other = convzoo.create_model("resnet20", pad_channels="split")
    convzoo.load_weights(other, state)
    assert not torch.allclose(outputs(other, X), outputs(default, X), atol=1e-3)
    assert convzoo.count_params(other) == convzoo.count_params(default) == 269_722


def test_pad_channels_is_checked_and_reaches_the_command_line():
    with pytest.raises(ValueError, match=r"resnet20: unknown pad_channels 'before'; expected 'after' .* or 'split'"):
        convzoo.create_model("resnet20", pad_channels="before")
    with pytest.raises(ValueError, match=r"pad_channels applies to shortcut option A only; .* shortcut='B'"):
        convzoo.create_model("resnet20", shortcut="B", pad_channels="split")
    from convzoo.cli import build_parser
    from convzoo.cli.train import _train_config

    config = _train_config(build_parser().parse_args(["train", "resnet20", "--arch", "pad_channels=split"]))
    assert config.model_args == {"pad_channels": "split"}
    with torch.device("meta"):
        assert convzoo.create_model("resnet20", **config.model_args).cfg.pad_channels == "split"


def test_old_checkpoints_without_batch_norm_counters_load(tmp_path):
    ref = trained_looking(RefCifarResNet(20))
    path = save_reference(ref, tmp_path / "old.th", counters=False)
    model = convzoo.create_model("resnet20", pad_channels="split", weights=path)
    torch.testing.assert_close(outputs(model, X), outputs(ref, X), atol=1e-5, rtol=0)


def test_option_b_checkpoints_of_the_reimplementation_map_their_shortcut(tmp_path):
    ref = trained_looking(RefCifarResNet(20, option="B"))
    assert "module.layer2.0.shortcut.0.weight" in torch.load(save_reference(ref, tmp_path / "b.th"))["state_dict"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # projection shortcuts pad nothing: there is no convention to switch
        model = convzoo.create_model("resnet20", shortcut="B", weights=tmp_path / "b.th")
    assert model.cfg.pad_channels == "after"
    torch.testing.assert_close(outputs(model, X), outputs(ref, X), atol=1e-5, rtol=0)


def test_without_translation_the_keys_do_not_fit_and_the_layout_is_named(tmp_path):
    path = save_reference(trained_looking(RefCifarResNet(20)), tmp_path / "resnet20.th")
    with pytest.raises(WeightsError) as info:
        convzoo.load_weights(convzoo.create_model("resnet20", pad_channels="split"), path, layout=None)
    message = str(info.value)
    assert "unexpected in the checkpoint (2)" in message and "linear.weight" in message
    assert "These are keys of the 'pytorch-resnet-cifar10' layout" in message


def test_a_depth_mismatch_under_a_layout_says_what_the_checkpoint_is(tmp_path):
    path = save_reference(trained_looking(RefCifarResNet(32)), tmp_path / "resnet32.th")
    with pytest.raises(WeightsError) as info:
        convzoo.create_model("resnet20", weights=path)
    message = str(info.value)
    assert "translated from the 'pytorch-resnet-cifar10' layout" in message
    assert "looks like a torchvision-style ResNet-32 (basic blocks 5-5-5, 3x3 stem, fc 64->10)" in message


# timm's pre-activation ResNetV2 names, written out from timm's resnetv2.py: the stem convolution `stem.conv`, blocks
# `stages.{i}.blocks.{j}` with norm1/conv1/norm2/conv2(/norm3/conv3) and `downsample.conv`, a final `norm`, and the
# classifier `head.fc`, a 1x1 convolution.
def timm_resnetv2_name(key: str) -> str:
    if key.startswith("conv1."):
        return "stem." + key.replace("conv1.", "conv.")
    if key.startswith("fc."):
        return "head." + key
    if key.startswith("layer"):
        stage, block, rest = key.split(".", 2)
        rest = rest.replace("bn", "norm").replace("downsample.0.", "downsample.conv.")
        return f"stages.{int(stage[5:]) - 1}.blocks.{block}.{rest}"
    return key


def timm_resnetv2_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {timm_resnetv2_name(k): v for k, v in model.state_dict().items()}
    state["head.fc.weight"] = state["head.fc.weight"][:, :, None, None]
    return state


def test_timm_resnetv2_round_trip():
    torch.manual_seed(0)
    source = trained_looking(convzoo.create_model("preact_resnet18", num_classes=7))
    timm_state = timm_resnetv2_state(source)
    assert detect_layout(timm_state) is get_layout("timm-resnetv2")
    assert {"stem.conv.weight", "stages.0.blocks.0.norm1.weight", "stages.3.blocks.1.conv2.weight"} <= set(timm_state)
    assert "stages.1.blocks.0.downsample.conv.weight" in timm_state and "norm.running_var" in timm_state
    model = convzoo.load_weights(convzoo.create_model("preact_resnet18", num_classes=7), timm_state)
    assert model.state_dict().keys() == source.state_dict().keys()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(outputs(model, x), outputs(source, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["preact_resnet50", "preact_resnet101"])
def test_timm_resnetv2_bottleneck_keys_map_to_ours(name):
    with torch.device("meta"):
        own = convzoo.create_model(name).state_dict()
    timm_state = {timm_resnetv2_name(k): v for k, v in own.items()}
    timm_state["head.fc.weight"] = torch.empty(1000, 2048, 1, 1, device="meta")
    assert {"stages.3.blocks.2.norm3.weight", "stages.0.blocks.0.downsample.conv.weight"} <= set(timm_state)
    assert detect_layout(timm_state) is get_layout("timm-resnetv2")
    translated = get_layout("timm-resnetv2").translate(timm_state, own)
    assert {k: v.shape for k, v in translated.items()} == {k: v.shape for k, v in own.items()}


def test_timm_resnet_names_need_no_layout():
    # Keys of timm's resnet.py networks (resnet50, seresnet50) as timm names them: torchvision's, and convzoo's.
    timm_keys = {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.bias",
        "fc.weight",
    }
    with torch.device("meta"):
        assert timm_keys <= set(convzoo.create_model("resnet50").state_dict())
        se_keys = set(convzoo.create_model("se_resnet50").state_dict())
    assert {"layer1.0.se.fc1.weight", "layer1.0.se.fc1.bias", "layer3.5.se.fc2.weight"} <= se_keys
    assert detect_layout(timm_keys) is None


def test_a_checkpoint_that_fits_no_layout_is_described(tmp_path):
    import torchvision

    with torch.device("meta"):
        tv = torchvision.models.resnet50().state_dict()
    with pytest.raises(WeightsError) as info:
        convzoo.load_weights(convzoo.create_model("resnet20"), tv)
    message = str(info.value)
    assert "The checkpoint holds 320 tensors; top-level prefixes: conv1 (1), bn1 (5), layer1 (60)" in message
    assert "conv1.weight (64, 3, 7, 7)" in message and "fc.weight (1000, 2048)" in message
    assert "looks like a torchvision-style ResNet-50 (bottleneck blocks 3-4-6-3, 7x7 stem, fc 2048->1000)" in message
    assert "No known key layout ('pytorch-resnet-cifar10', 'timm-resnetv2') recognises these keys" in message
    path = tmp_path / "vgg_like.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "classifier.weight": torch.zeros(10, 8)}, path)
    with pytest.raises(WeightsError) as info:
        convzoo.create_model("resnet20", weights=path)
    message = str(info.value)
    assert "holds 2 tensors; top-level prefixes: features (1), classifier (1)" in message
    assert "features.0.weight (8, 3, 3, 3), classifier.weight (10, 8)" in message and "looks like" not in message


def test_layout_names_are_checked(tmp_path):
    path = save_reference(trained_looking(RefCifarResNet(20)), tmp_path / "resnet20.th")
    with pytest.raises(ValueError, match=r"unknown key layout 'timm'; known layouts: 'pytorch-resnet-cifar10' \(.*"):
        convzoo.load_weights(convzoo.create_model("resnet20"), path, layout="timm")
    with pytest.raises(ValueError, match=r"'timm-resnetv2' \("):
        get_layout("akamaster")
    with pytest.raises(WeightsError, match=r"translated from the 'timm-resnetv2' layout"):
        convzoo.load_weights(convzoo.create_model("resnet20"), path, layout="timm-resnetv2")
    assert [lay.name for lay in list_layouts()] == [CIFAR_LAYOUT, "timm-resnetv2"]


def test_a_model_that_cannot_switch_is_refused():
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.short = ZeroPadShortcut(2, 4, 2)
            self.fc = nn.Linear(2, 2)

    layout = KeyLayout("test-layout", "a test", ("linear.weight",), r"linear\.\w+", ((r"^linear\.", "fc."),), (), {})
    state = {"linear.weight": torch.zeros(2, 2), "linear.bias": torch.zeros(2)}
    assert layout.translate(state, Fixed().state_dict()).keys() == {"fc.weight", "fc.bias"}
    split = KeyLayout(**{**layout.__dict__, "settings": {"pad_channels": "split"}})
    from convzoo.layouts import apply_settings

    with pytest.raises(ValueError, match="need pad_channels='split', but the model uses pad_channels='after'"):
        apply_settings(Fixed(), split)
    assert apply_settings(Fixed(), layout) == []
