"""The shared model interface, enforced for every registered model: registering a model is enough to get it checked."""

import math

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.models.base import AuxOutputs, ConvNet, FeatureExtractor, classification_loss, main_logits

ALL_MODELS = convzoo.list_models()
# The degradation lesson taken to its end: without shortcuts, batch norm's gradient growth compounds over 1,200
# layers past the float32 range. These networks are checked in float64, and only their classifier takes a step.
OVERFLOW_FLOAT32 = {"plain1202"}


def small_input(model: ConvNet, batch: int = 2) -> torch.Tensor:
    # Twice the minimum size keeps every model cheap while leaving more than one pixel after the last stride.
    size = max(2 * model.min_input_size, 8)
    dtype = next(model.parameters()).dtype
    return torch.randn(batch, model.in_chans, size, size, dtype=dtype)


def calibrate_norms(model: nn.Module, x: torch.Tensor) -> None:
    """Set batch-norm running statistics to those of ``x``.

    An untrained network in eval mode normalises with mean 0 and variance 1; in a deep plain network the activations
    then grow layer after layer until they overflow. Real use always trains first; the tests calibrate instead.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


# Deeper or wider members of a family whose every layer type a cheaper member already exercises: the slow run checks
# them, the default run their smaller siblings (vgg11 and vgg11_bn, nasnet_a_mobile, resnext50_32x4d, ...).
SLOW_MODELS = {
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "nasnet_a_large",
    "wide_resnet101_2",
    "resnext101_32x8d",
    "resnext101_64x4d",
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name for name in ALL_MODELS],
)
def model(request):
    torch.manual_seed(0)
    net = convzoo.create_model(request.param, num_classes=7)
    if request.param in OVERFLOW_FLOAT32:
        net = net.double()
    calibrate_norms(net, small_input(net))
    return net


# Registered networks per family: a family whose registration breaks, or loses or gains a variant, shows here.
FAMILY_SIZES = {
    "alexnet": 3,
    "bagnet": 3,
    "densenet": 11,
    "fractalnet": 1,
    "googlenet": 2,
    "highway": 1,
    "inception_v3": 1,
    "lenet": 1,
    "mobilenet": 9,
    "nasnet": 2,
    "nin": 1,
    "resnet": 50,
    "squeezenet": 2,
    "vgg": 10,
}


def test_registry_is_populated():
    families = [convzoo.get_model_card(name).family for name in ALL_MODELS]
    assert {family: families.count(family) for family in set(families)} == FAMILY_SIZES
    assert len(ALL_MODELS) == sum(FAMILY_SIZES.values()) == 97


def test_trains_one_step(model):
    """Finite output of the right shape; gradients reach the input and every parameter; a gradient step lowers the loss.

    Deep networks with batch norm on a batch of two have very large, uneven gradients, so no single learning rate
    suits all of them: the step backs off from 1e-2 until the loss falls, which holds for a correct gradient.
    """
    model.train()
    x = small_input(model).requires_grad_(True)
    target = torch.tensor([1, 4])
    torch.manual_seed(1)  # every forward below draws the same dropout and drop-path masks
    out = model(x)
    assert main_logits(out).shape == (2, 7)
    if isinstance(out, AuxOutputs):
        assert all(a.shape == (2, 7) for a in out.aux_logits) and len(out.aux_weights) == len(out.aux_logits)
    assert all(
        torch.isfinite(t).all() for t in ([out] if isinstance(out, torch.Tensor) else [out.logits, *out.aux_logits])
    )
    loss = classification_loss(out, target)
    model.zero_grad()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    if model.model_name in OVERFLOW_FLOAT32:
        # Its gradients are astronomically large even in float64: only the classifier can take a sane step.
        params = list(model.get_classifier().parameters())
    # Every trial starts from the same weights and batch-norm statistics: a step too large for the network can make
    # its output non-finite, and in training mode that would reach the running statistics the later tests read.
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []
    with torch.no_grad():
        for lr in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8):
            for p in params:
                p.sub_(lr * p.grad)
            torch.manual_seed(1)
            losses.append(classification_loss(model(x), target).item())
            model.load_state_dict(saved)
            if losses[-1] < loss.item():  # False for a non-finite loss: the step backs off further
                break
    assert losses[-1] < loss.item(), (loss.item(), losses)


def test_every_step_format_the_engine_may_choose(model):
    """Channels-last computes what the contiguous layout computes; bf16 autocast trains with finite gradients.

    The training engine picks whichever of these is fastest for a job (`convzoo.train.tuning`), for any model. The
    layouts are compared in float64: an untrained deep network amplifies float32 rounding past any fixed tolerance.
    """
    torch.manual_seed(0)
    net = convzoo.create_model(model.model_name, num_classes=7).double()  # untouched by the other tests' steps
    x = small_input(net)
    calibrate_norms(net, x)
    net.eval()
    with torch.no_grad():
        expected = main_logits(net(x))
        net = net.to(memory_format=torch.channels_last)
        got = main_logits(net(x.contiguous(memory_format=torch.channels_last)))
    if model.model_name in OVERFLOW_FLOAT32:
        # 1,200 plain layers turn any change in the order of sums into a different result (logits near 1e72), and
        # bf16 has float32's range, which this network's gradients exceed (see the float32 test below).
        assert got.shape == expected.shape and torch.isfinite(got).all()
        return
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7 * expected.abs().max().item())
    net = net.float().train()
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x.float().contiguous(memory_format=torch.channels_last))
        loss = classification_loss(out, torch.tensor([1, 4]))
    loss.float().backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_interface(model):
    assert isinstance(model, ConvNet)
    model.eval()
    x = small_input(model)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        logits = model.forward_head(features)
        assert torch.allclose(logits, model(x), atol=1e-5)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        # The pre-logits vector is what the output layer reads: the output layer alone turns it into the logits.
        if isinstance(model.get_classifier(), nn.Linear):
            torch.testing.assert_close(model.get_classifier()(pre), logits, atol=1e-5, rtol=1e-4)
    assert model.num_classes == 7


def test_eval_is_deterministic_and_train_updates_norm_stats(model):
    x = small_input(model)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if norms:
        before = norms[0].running_mean.clone()
        model.train()
        with torch.no_grad():
            model(x)
        assert not torch.equal(before, norms[0].running_mean)


def test_feature_info_matches_intermediates(model):
    model.eval()
    x = small_input(model)
    info = model.feature_info
    assert len(info) >= 2
    reductions = [f.reduction for f in info]
    assert reductions == sorted(reductions)
    # `reduction` is the cumulative stride: an input larger by `step` pixels (a multiple of every reduction) gives
    # maps larger by exactly step / reduction pixels. With 'same' padding a map has ceil(size / reduction) pixels;
    # unpadded convolutions and pools (Inception v3, AlexNet) and ceil-mode pools (GoogLeNet) leave fewer.
    step = math.lcm(*reductions)
    size = x.shape[-1]
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        larger = model.forward_intermediates(torch.randn(*x.shape[:2], size + step, size + step, dtype=x.dtype))
        assert len(maps) == len(info)
        for f, m, m_larger in zip(info, maps, larger):
            assert m.shape[1] == f.num_chs, f
            assert 1 <= m.shape[-1] <= -(-size // f.reduction), f
            assert m_larger.shape[-1] - m.shape[-1] == step // f.reduction, f
        assert torch.allclose(maps[-1], model.forward_features(x))
        last_two = model.forward_intermediates(x, 2)
        assert [t.shape for t in last_two] == [t.shape for t in maps[-2:]]


def hooked_intermediates(model: ConvNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The reference for `forward_intermediates`: the outputs of the tap modules, caught by hooks on a full forward."""
    modules = dict(model.named_modules())
    captured = {}
    handles = [
        modules[f.module].register_forward_hook(lambda _m, _i, out, name=f.module: captured.setdefault(name, out))
        for f in model.feature_info
    ]
    try:
        model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return [captured[f.module] for f in model.feature_info]


def test_intermediates_are_the_tapped_modules_outputs(model):
    """`forward_intermediates` runs the trunk as a sequence of tap segments; its maps are those that hooks catch."""
    model.eval()
    x = small_input(model)
    with torch.no_grad():
        expected = hooked_intermediates(model, x)
        for stop_early in (True, False):
            got = model.forward_intermediates(x, stop_early=stop_early)
            assert len(got) == len(expected)
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), model.model_name
        first = model.forward_intermediates(x, [0, -1])
        assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[-1])


def test_reset_classifier(model):
    x = small_input(model)
    model.eval()
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)
    model.reset_classifier(7)


def test_bad_input_is_explained(model):
    size = max(2 * model.min_input_size, 8)
    wrong_chans = 1 if model.in_chans != 1 else 3
    with pytest.raises(ValueError, match=rf"expects a batch of shape \(N, {model.in_chans}, H, W\)"):
        model(torch.randn(1, wrong_chans, size, size))
    with pytest.raises(ValueError, match="add a batch dimension"):
        model(torch.randn(model.in_chans, size, size))
    if model.min_input_size > 1:
        too_small = model.min_input_size - 1
        with pytest.raises(ValueError, match=rf"at least {model.min_input_size}x{model.min_input_size}.*got"):
            model(torch.randn(1, model.in_chans, too_small, too_small))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_card(name):
    card = convzoo.get_model_card(name)
    assert card.name == name
    assert card.paper.authors and card.paper.title and card.paper.venue and 1989 <= card.paper.year <= 2026
    assert len(card.input_size) == 3 and len(card.mean) == len(card.std) == card.input_size[0]
    for result in card.reported:
        assert result.source.startswith("Table") and 0 < result.value < 100


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only(name):
    extractor = convzoo.create_model(name, features_only=True, out_indices=(-2, -1))
    assert isinstance(extractor, FeatureExtractor)
    model = extractor.model
    extractor.eval()
    with torch.no_grad():
        maps = extractor(small_input(model, batch=1))
    assert [m.shape[1] for m in maps] == extractor.channels()
    assert extractor.reductions() == [f.reduction for f in model.feature_info[-2:]]
    assert sum(p.numel() for p in model.get_classifier().parameters()) == 0


def test_plain1202_gradients_overflow_float32():
    """Why plain1202 is checked in float64: in float32 its input gradient is not finite at initialisation."""
    torch.manual_seed(0)
    model = convzoo.create_model("plain1202").train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 4])).backward()
    assert not torch.isfinite(x.grad).all()
    assert torch.isfinite(model.fc.weight.grad).all()
