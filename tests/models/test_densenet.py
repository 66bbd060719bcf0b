"""DenseNet: torchvision equivalence (current and legacy keys), the paper's parameter counts, the memory-efficient
mode's identical outputs, gradients and statistics at lower memory, dropout placement and golden CIFAR outputs."""

import math

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.checkpoint import checkpoint

import convzoo
from convzoo.layers import dense
from convzoo.layers.dense import DenseLayer


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model(name, **kwargs))


def torchvision_densenet(name: str) -> nn.Module:
    if name == "densenet264":  # Table 1's deepest network; torchvision's class builds it, its registry does not
        return torchvision.models.DenseNet(growth_rate=32, block_config=(6, 12, 64, 48), num_init_features=64)
    return getattr(torchvision.models, name)(weights=None)


def test_parameter_counts_equal_torchvision():
    assert n_params("densenet121") == 7_978_856
    assert n_params("densenet169") == 14_149_480
    assert n_params("densenet201") == 20_013_928
    assert n_params("densenet161") == 28_681_000
    with torch.device("meta"):
        assert n_params("densenet264") == convzoo.count_params(torchvision_densenet("densenet264")) == 33_337_704


def cifar_reference_count(depth: int, k: int, bc: bool, classes: int = 10) -> int:
    """Parameters of the paper's CIFAR DenseNet, from section 3: a 3x3 stem of 16 (2k for BC) filters; three blocks
    of (L - 4) / 3 layers, or (L - 4) / 6 bottleneck layers (BN-1x1 conv to 4k-BN-3x3 conv to k); BN-1x1 conv
    transitions to floor(theta * m) maps, theta = 0.5 for BC; a final BN and the classifier. Convolutions have no
    bias; every BN has a scale and a shift."""
    per_block = (depth - 4) // (6 if bc else 3)
    chs = 2 * k if bc else 16
    total = 3 * chs * 9
    for block in range(3):
        for _ in range(per_block):
            total += 2 * chs + (chs * 4 * k + 2 * 4 * k + 4 * k * k * 9 if bc else chs * k * 9)
            chs += k
        if block < 2:
            out = math.floor(chs * (0.5 if bc else 1.0))
            total += 2 * chs + chs * out
            chs = out
    return total + 2 * chs + chs * classes + classes


# Table 2's parameter column: (L, k, BC, millions).
TABLE_2 = {
    "densenet_40_12": (40, 12, False, 1.0),
    "densenet_100_12": (100, 12, False, 7.0),
    "densenet_100_24": (100, 24, False, 27.2),
    "densenet_bc_100_12": (100, 12, True, 0.8),
    "densenet_bc_250_24": (250, 24, True, 15.3),
    "densenet_bc_190_40": (190, 40, True, 25.6),
}


@pytest.mark.parametrize("name", sorted(TABLE_2))
def test_cifar_parameter_counts_match_table_2(name):
    depth, k, bc, millions = TABLE_2[name]
    count = n_params(name)
    assert count == cifar_reference_count(depth, k, bc)
    assert round(count / 1e6, 1) == millions
    assert n_params(name, num_classes=100) == cifar_reference_count(depth, k, bc, classes=100)


def test_cifar_structure_follows_section_3():
    model = convzoo.create_model("densenet_bc_100_12")
    blocks = [getattr(model.features, f"denseblock{i}") for i in (1, 2, 3)]
    assert [len(b) for b in blocks] == [16, 16, 16]
    layer = blocks[0].denselayer1
    assert (layer.conv1.kernel_size, layer.conv1.out_channels, layer.conv2.kernel_size) == ((1, 1), 48, (3, 3))
    # 24 stem maps + 16 x 12 = 216, compressed to 108; 108 + 192 = 300 -> 150; 150 + 192 = 342.
    assert [f.num_chs for f in model.feature_info] == [24, 216, 300, 342]
    assert model.features.transition1.conv.out_channels == 108
    assert [f.reduction for f in model.feature_info] == [1, 1, 2, 4]
    basic = convzoo.create_model("densenet_40_12")
    assert basic.features.conv0.out_channels == 16 and not basic.features.denseblock1.denselayer1.bottleneck
    assert basic.features.transition1.conv.out_channels == 16 + 12 * 12  # no compression
    imagenet = convzoo.create_model("densenet121")
    assert [f.num_chs for f in imagenet.feature_info] == [64, 256, 512, 1024, 1024]
    assert [f.reduction for f in imagenet.feature_info] == [2, 4, 8, 16, 32]


def randomize_norms(model: nn.Module) -> None:
    # Non-trivial batch-norm statistics, so a misplaced norm layer cannot hide behind mean 0 / variance 1.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201", "densenet264"])
def test_matches_torchvision(name):
    torch.manual_seed(0)
    reference = torchvision_densenet(name).eval()
    randomize_norms(reference)
    ours = convzoo.create_model(name).eval()
    convzoo.load_weights(ours, reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_torchvision_legacy_keys_load():
    torch.manual_seed(0)
    reference = torchvision.models.densenet121(weights=None).eval()
    randomize_norms(reference)
    state = reference.state_dict()
    # torchvision's first checkpoints spelled "norm1" as "norm.1" inside dense layers.
    legacy = {
        k.replace(".norm1.", ".norm.1.")
        .replace(".norm2.", ".norm.2.")
        .replace(".conv1.", ".conv.1.")
        .replace(".conv2.", ".conv.2."): v
        for k, v in state.items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.transition1.norm.weight" in legacy  # transitions never had the dotted names
    ours = convzoo.create_model("densenet121").eval()
    assert ours.remap_state_dict(state).keys() == state.keys()  # current keys pass unchanged
    convzoo.load_weights(ours, legacy)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def saved_tensor_bytes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Output of a training forward pass and the bytes autograd keeps for its backward pass."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, sum(seen.values())


def test_memory_efficient_mode_is_exact_and_saves_memory():
    torch.manual_seed(0)
    standard = convzoo.create_model("densenet_bc_100_12", drop_rate=0.2).train()
    efficient = convzoo.create_model("densenet_bc_100_12", drop_rate=0.2, memory_efficient=True).train()
    efficient.load_state_dict(standard.state_dict())
    assert {m.memory_efficient for m in efficient.modules() if isinstance(m, DenseLayer)} == {True}
    x = torch.randn(4, 3, 16, 16)
    results = []
    for model in (standard, efficient):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(1)  # the same dropout masks for both
        out, saved = saved_tensor_bytes(model, xi)
        nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in model.named_parameters()}, saved))
    (out_s, gx_s, grads_s, saved_s), (out_e, gx_e, grads_e, saved_e) = results
    assert torch.equal(out_e, out_s)
    torch.testing.assert_close(gx_e, gx_s, rtol=1e-5, atol=1e-7)
    for name, grad in grads_s.items():
        torch.testing.assert_close(grads_e[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # The recomputation in the backward pass must not update the batch-norm statistics a second time.
    for (name, buf_s), buf_e in zip(standard.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(buf_e, buf_s, rtol=1e-6, atol=1e-7, msg=name)
    # The concatenations and first BN-ReLU-convolutions are not kept: well under half the saved activations.
    assert saved_e < 0.5 * saved_s, (saved_e, saved_s)


def test_memory_efficient_mode_only_checkpoints_when_a_gradient_is_needed(monkeypatch):
    calls = []

    def counting_checkpoint(function, *args, **kwargs):
        calls.append(len(args))
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(dense, "checkpoint", counting_checkpoint)
    model = convzoo.create_model("densenet_bc_100_12", memory_efficient=True).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out_no_grad = model(x)
    assert calls == []
    out = model(x)  # the parameters need gradients: every dense layer is checkpointed
    assert calls == list(range(1, 17)) * 3  # the k-th layer of a block concatenates k inputs
    torch.testing.assert_close(out, out_no_grad)


def test_dropout_follows_every_convolution_but_the_first():
    """Section 4.2: "a dropout layer after each convolutional layer (except the first one)"."""
    model = convzoo.create_model("densenet_bc_100_12", drop_rate=0.2).train()
    calls = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            assert m.p == 0.2
            m.register_forward_hook(lambda *_: calls.append(1))
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    model(torch.randn(2, 3, 8, 8))
    assert len(calls) == convs - 1 == 48 * 2 + 2
    plain = convzoo.create_model("densenet_bc_100_12")
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())


def test_cards_cite_the_tables():
    assert convzoo.get_model_card("densenet121").top1_accuracy() == pytest.approx(100 - 25.02)
    card = convzoo.get_model_card("densenet264")
    assert [(r.metric, r.value, r.source, r.note) for r in card.reported] == [
        ("top-1 error", 22.15, "Table 3", "single 224x224 crop"),
        ("top-5 error", 6.12, "Table 3", "single 224x224 crop"),
        ("top-1 error", 20.80, "Table 3", "10-crop testing"),
        ("top-5 error", 5.29, "Table 3", "10-crop testing"),
    ]
    assert convzoo.get_model_card("densenet161").reported == ()  # Table 3 has no DenseNet-161 row
    bc = convzoo.get_model_card("densenet_bc_190_40")
    assert [(r.dataset, r.value) for r in bc.reported] == [("CIFAR-10", 3.46), ("CIFAR-100", 17.18)]
    assert convzoo.get_model_card("densenet_bc_100_12").reported[1].value == 22.27


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"compression": 0.0}, r"compression \(theta\) must lie in \(0, 1\]"),
        ({"compression": 1.5}, r"compression \(theta\) must lie in \(0, 1\]"),
        ({"block_config": (6, 0, 6)}, "every dense block needs at least one layer"),
        ({"bn_size": -1}, "bn_size must be 0"),
        ({"stem": "tiny"}, "unknown stem 'tiny'"),
        ({"drop_rate": 1.0}, r"drop_rate must lie in \[0, 1\)"),
        ({"growth_rate": 0}, "growth_rate and stem_width must be positive"),
        (
            {"compression": 0.01, "growth_rate": 1, "stem_width": 1, "block_config": (1, 1)},
            "compression 0.01 leaves transition 1 with no channels",
        ),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"densenet_bc_100_12: {message}"):
        convzoo.create_model("densenet_bc_100_12", **overrides)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="densenet121 got unexpected keyword argument.*'growth'.*growth_rate"):
        convzoo.create_model("densenet121", growth=12)


def test_too_small_input_is_explained():
    with pytest.raises(ValueError, match="densenet121 needs images of at least 32x32"):
        convzoo.create_model("densenet121").eval()(torch.randn(1, 3, 31, 31))


@pytest.mark.parametrize("name", sorted(TABLE_2))
def test_golden_outputs(name, golden):
    """No installed library has the CIFAR DenseNets; these outputs pin the implementation down."""
    golden(name, {"logits": golden.calibrated_logits(name, 8)}, model=name, input=[2, 3, 8, 8])
