"""The residual family: parameter counts from the papers and peers, torchvision equivalence, and the paper's options."""

import pytest
import torch
import torch.nn as nn
import torchvision

import convzoo
from convzoo.layers import ZeroPadShortcut
from convzoo.layers.residual import BasicBlock, PreActBasicBlock
from convzoo.models.resnet import ResNet


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model(name, **kwargs))


# Exact figures: He et al. 2016 (CIFAR, option A) as tabulated by reimplementations, torchvision for the ImageNet
# networks it ships, and timm for the SE networks (seresnet50, seresnext50_32x4d) and PreAct ResNet-50 (resnetv2_50).
EXACT = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "se_resnet50": 28_088_024,
    "se_resnext50_32x4d": 27_559_896,
    "preact_resnet50": 25_549_352,
}

# Rounded figures printed in the papers: (millions, decimals). Some papers leave batch-norm parameters out of
# their counts; EXCLUDING_BN lists those figures.
EXCLUDING_BN = {"resnext29_16x64d"}
PAPER_ROUNDED = {
    "resnet20": (0.27, 2),  # He et al. Table 6
    "resnet32": (0.46, 2),
    "resnet44": (0.66, 2),
    "resnet56": (0.85, 2),
    "resnet110": (1.7, 1),
    "resnet1202": (19.4, 1),
    "preact_resnet110": (1.7, 1),  # Identity Mappings, Table 3
    "preact_resnet164": (1.7, 1),
    "wrn40_1": (0.6, 1),  # Zagoruyko and Komodakis, Table 4
    "wrn40_2": (2.2, 1),
    "wrn40_4": (8.9, 1),  # Table 5
    "wrn16_8": (11.0, 1),
    "wrn28_10": (36.5, 1),
    "wide_resnet50_2": (68.9, 1),  # Table 8
    "resnext29_8x64d": (34.4, 1),  # Xie et al. Table 7
    "resnext29_16x64d": (68.1, 1),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_parameter_counts(name):
    assert n_params(name) == EXACT[name]


@pytest.mark.parametrize("name", sorted(PAPER_ROUNDED))
def test_paper_parameter_counts(name):
    millions, decimals = PAPER_ROUNDED[name]
    with torch.device("meta"):
        model = convzoo.create_model(name)
    count = convzoo.count_params(model)
    if name in EXCLUDING_BN:
        count -= sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert round(count / 1e6, decimals) == millions


def test_resnext29_16x64d_exact_count():
    # Xie et al. Table 7 prints 68.1M, the count without batch norm; with it the network holds 68.16M.
    assert n_params("resnext29_16x64d") == 68_155_210
    assert n_params("resnext29_8x64d") == 34_426_698


def test_preact_1001_count_matches_paper_without_batch_norm():
    # Identity Mappings, Table 4, says 10.2M: the convolution and classifier weights. Its ~0.15M BN parameters
    # take the full count to 10.3M.
    with torch.device("meta"):
        model = convzoo.create_model("preact_resnet1001")
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert round((convzoo.count_params(model) - bn) / 1e6, 1) == 10.2
    assert convzoo.count_params(model) == 10_327_706


def test_plain_twins_have_no_shortcut_and_option_a_no_extra_parameters():
    for depth in (20, 32, 44, 56, 110):
        assert n_params(f"plain{depth}") == n_params(f"resnet{depth}")
    plain = convzoo.create_model("plain20")
    assert {(b.residual, b.downsample) for b in plain.modules() if isinstance(b, BasicBlock)} == {(False, None)}


def test_shortcut_options_b_and_c_add_projections():
    a, b, c = (n_params("resnet20", shortcut=s) for s in "ABC")
    # B: two projections where the width changes (16->32, 32->64), each a 1x1 conv plus BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # C: every one of the 9 blocks projects.
    assert c - a == 3 * (16 * 16 + 32) + (16 * 32 + 64) + 2 * (32 * 32 + 64) + (32 * 64 + 128) + 2 * (64 * 64 + 128)
    # ImageNet ResNet-34: option B is torchvision's; A drops the three projections.
    assert n_params("resnet34") - n_params("resnet34", shortcut="A") == sum(
        cin * cout + 2 * cout for cin, cout in ((64, 128), (128, 256), (256, 512))
    )


def test_option_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet110", "wrn16_8", "resnext29_8x64d"])
def test_zero_init_residual_makes_blocks_start_as_identity(name):
    model = convzoo.create_model(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if hasattr(m, "residual") and m.residual]
    for block in blocks[-3:]:
        in_chs = next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels
        if isinstance(block, PreActBasicBlock) or block.downsample is not None:
            continue
        x = torch.randn(1, in_chs, 4, 4)
        with torch.no_grad():
            expected = x if type(block).__name__.startswith("PreAct") else torch.relu(x)
            assert torch.allclose(block(x), expected)
    default = convzoo.create_model(name).eval()
    residual_norms = [m.last_norm().weight for m in default.modules() if getattr(m, "residual", False)]
    assert residual_norms and all(w.abs().sum() > 0 for w in residual_norms)


def test_zero_init_preact_basic_block_is_identity():
    block = convzoo.create_model("preact_resnet110", zero_init_residual=True).layer1[1].eval()
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_se_block_and_count():
    model = convzoo.create_model("se_resnet50")
    se = model.layer1[0].se
    assert (se.fc1.in_channels, se.fc1.out_channels) == (256, 16)
    # SE adds 2 C^2/r + C/r + C per bottleneck block (r = 16), over 3, 4, 6, 3 blocks.
    extra = sum(n * (2 * c * c // 16 + c // 16 + c) for n, c in ((3, 256), (4, 512), (6, 1024), (3, 2048)))
    assert n_params("se_resnet50") - n_params("resnet50") == extra


# The deeper networks repeat the blocks of their shallower twins: the default run checks one of each kind (basic,
# bottleneck, grouped, wide), the slow run all of them.
TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    pytest.param("resnet101", marks=pytest.mark.slow),
    pytest.param("resnet152", marks=pytest.mark.slow),
    "resnext50_32x4d",
    pytest.param("resnext101_32x8d", marks=pytest.mark.slow),
    pytest.param("resnext101_64x4d", marks=pytest.mark.slow),
    "wide_resnet50_2",
    pytest.param("wide_resnet101_2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", TORCHVISION)
def test_matches_torchvision(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    # Non-trivial batch-norm statistics, so a misplaced norm layer cannot hide behind mean 0 / variance 1.
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = convzoo.create_model(name).eval()
    convzoo.load_weights(ours, reference.state_dict())
    assert convzoo.count_params(ours) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_torchvision_checkpoint_file_loads_through_weights_argument(tmp_path):
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18_tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    ours = convzoo.create_model("resnet18", weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_depth_override_follows_the_family_rule():
    assert n_params("resnet20", depth=56) == EXACT["resnet56"]
    assert n_params("resnet18", depth=50) == EXACT["resnet50"]
    assert n_params("wrn16_8", depth=28, widen_factor=10) == n_params("wrn28_10")
    with pytest.raises(ValueError, match=r"resnet20: .*depth must be 6n\+2.*got 21"):
        convzoo.create_model("resnet20", depth=21)
    with pytest.raises(ValueError, match=r"depth must be 9n\+2.*got 165"):
        convzoo.create_model("preact_resnet164", depth=165)
    with pytest.raises(ValueError, match=r"6n\+4"):
        convzoo.create_model("wrn28_10", depth=27)
    with pytest.raises(ValueError, match=r"ImageNet residual networks come in depths"):
        convzoo.create_model("resnet50", depth=51)
    with pytest.raises(TypeError, match="either depth or layers"):
        convzoo.create_model("resnet50", depth=50, layers=(1, 1, 1, 1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"groups": 32}, "basic blocks support only groups=1"),
        ({"layers": (2, 0, 2)}, "every stage needs at least one block"),
        ({"planes": (16, 32)}, "layers has 3 stages but planes has 2"),
        ({"shortcut": "D"}, "unknown shortcut option 'D'"),
        ({"planes": (64, 32, 16)}, r"shortcut option A can only add channels, but the widths go \[16, 64, 32, 16\]"),
        ({"block": "triple"}, "unknown block 'triple'"),
        ({"drop_rate": 1.5}, r"drop_rate and block_drop_rate must lie in \[0, 1\)"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"resnet20: {message}"):
        convzoo.create_model("resnet20", **overrides)


def test_grouped_width_cannot_vanish():
    with pytest.raises(ValueError, match="resnext29_8x64d: base_width=2 leaves the 16-plane stage with"):
        convzoo.create_model("resnext29_8x64d", base_width=2, planes=(16, 32, 64))
    with pytest.raises(ValueError, match="resnet: base_width=1"):
        ResNet(convzoo.models.resnet.ResNetConfig(groups=8, base_width=1, layers=(1, 1), planes=(16, 32)))


def test_wrn_dropout_and_in_chans():
    model = convzoo.create_model("wrn16_8", block_drop_rate=0.3, in_chans=1, num_classes=100)
    assert model.layer1[0].drop.p == 0.3
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_cifar_models_keep_resolution_in_stage_one_and_imagenet_models_reduce_by_32():
    cifar = convzoo.create_model("resnet56")
    assert [f.reduction for f in cifar.feature_info] == [1, 1, 2, 4]
    assert [f.num_chs for f in cifar.feature_info] == [16, 16, 32, 64]
    imagenet = convzoo.create_model("resnext50_32x4d")
    assert [f.reduction for f in imagenet.feature_info] == [2, 4, 8, 16, 32]
    assert [f.num_chs for f in imagenet.feature_info] == [64, 256, 512, 1024, 2048]


@pytest.mark.parametrize("block", [BasicBlock, PreActBasicBlock])
def test_basic_blocks_refuse_bottleneck_settings(block):
    # A basic block has no grouped convolution: groups or base_width given to it is a mistake, not something to ignore.
    with pytest.raises(TypeError, match="groups"):
        block(8, 8, groups=2)
    with pytest.raises(TypeError, match="base_width"):
        block(8, 8, base_width=4)


def test_resnext_settings_reach_the_bottleneck_only():
    model = convzoo.create_model("resnext50_32x4d", num_classes=3)
    assert model.layer1[0].conv2.groups == 32 and model.layer1[0].conv2.out_channels == 128
    convs = [m for m in convzoo.create_model("resnet20").modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and {m.groups for m in convs} == {1}
