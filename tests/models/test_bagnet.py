"""BagNet-9/17/33: the authors' structure and parameter counts, patches of exactly q x q pixels 8 apart, logits that
are the average of the class-evidence map, golden outputs."""

import functools

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.analysis.receptive import receptive_fields
from convzoo.models.bagnet import BagNetBottleneck

PATCH = {"bagnet9": 9, "bagnet17": 17, "bagnet33": 33}
# How many leading blocks of each stage keep a 3x3 convolution, as the authors' bagnet9/17/33 builders set it.
KERNEL3 = {"bagnet9": (1, 1, 0, 0), "bagnet17": (1, 1, 1, 0), "bagnet33": (1, 1, 1, 1)}


def reference_structure(kernel3: tuple[int, ...]) -> tuple[int, set[str]]:
    """Parameter count and state_dict keys of the authors' BagNet (bagnets/pytorchnet.py), derived from its layout:
    conv1 1x1 and conv2 3x3 (64 channels) with bn1; ResNet-50 bottleneck stages of 3, 4, 6, 3 blocks, strides
    2, 2, 2, 1, the first ``kernel3`` blocks of a stage with a 3x3 middle convolution; a 2048 -> 1000 FC layer."""
    bn_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "conv2.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in bn_keys}
    total = 3 * 64 + 64 * 64 * 9 + 2 * 64 + 2048 * 1000 + 1000
    in_chs = 64
    for stage, (planes, blocks, stride, k3) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (2, 2, 2, 1), kernel3)):
        for i in range(blocks):
            kernel = 3 if i < k3 else 1
            total += (
                in_chs * planes + planes * planes * kernel**2 + planes * 4 * planes + 2 * (planes + planes + 4 * planes)
            )
            prefix = f"layer{stage + 1}.{i}"
            keys |= {f"{prefix}.conv{j}.weight" for j in (1, 2, 3)}
            keys |= {f"{prefix}.bn{j}.{k}" for j in (1, 2, 3) for k in bn_keys}
            if i == 0 and (stride != 1 or in_chs != 4 * planes):
                total += in_chs * 4 * planes + 2 * 4 * planes
                keys |= {f"{prefix}.downsample.0.weight"} | {f"{prefix}.downsample.1.{k}" for k in bn_keys}
            in_chs = 4 * planes
    return total, keys


@pytest.mark.parametrize("name", sorted(PATCH))
def test_structure_and_parameter_count_equal_the_authors_code(name):
    with torch.device("meta"):
        model = convzoo.create_model(name)
    total, keys = reference_structure(KERNEL3[name])
    assert convzoo.count_params(model) == total
    assert set(model.state_dict()) == keys  # the authors' checkpoints load by name
    assert model.bn1.momentum == 0.001
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 1 + sum(KERNEL3[name])
    assert {m.padding for m in model.modules() if isinstance(m, nn.Conv2d)} == {(0, 0)}


def test_exact_parameter_counts():
    counts = {}
    for name in PATCH:
        with torch.device("meta"):
            counts[name] = convzoo.count_params(convzoo.create_model(name))
    assert counts == {"bagnet9": 15_688_744, "bagnet17": 16_213_032, "bagnet33": 18_310_184}


def test_bagnet33_is_resnet50_with_a_new_stem_and_1x1_convolutions():
    # ResNet-50's 7x7 stem (9,408 weights) becomes a 1x1 (192) and a 3x3 (36,864) convolution, and the 3x3
    # convolution of every block but the first of each stage becomes 1x1, saving 8 * planes^2 weights each.
    with torch.device("meta"):
        resnet50, bagnet33 = convzoo.create_model("resnet50"), convzoo.create_model("bagnet33")
    saved = sum(n * 8 * p * p for n, p in ((2, 64), (3, 128), (5, 256), (2, 512)))
    assert convzoo.count_params(resnet50) - convzoo.count_params(bagnet33) == 9408 - 192 - 36864 + saved


@pytest.mark.parametrize("name", sorted(PATCH))
def test_receptive_field_and_patch_stride_are_computed_from_the_layers(name):
    q = PATCH[name]
    with torch.device("meta"):
        model = convzoo.create_model(name)
    assert (model.receptive_field, model.patch_stride, model.min_input_size) == (q, 8, q)
    assert [f.reduction for f in model.feature_info] == [1, 2, 4, 8, 8]
    # The receptive-field analysis, which traces every operation (crops of the shortcut included), agrees: the
    # first unit's field is centred on pixel (q - 1) / 2, so it spans pixels 0 to q - 1.
    field = receptive_fields(model, (3, q + 8, q + 8), device="meta")["layer4"]
    assert (field.size, field.jump, field.start) == ((q, q), (8, 8), ((q - 1) / 2, (q - 1) / 2))
    # An unpadded network has one evidence unit per whole patch: floor((size - q) / 8) + 1 along each axis.
    for size in (q, q + 7, q + 8, 100, 224):
        evidence = model.patch_logits(torch.empty(1, 3, size, size + 8, device="meta"))
        assert evidence.shape == (1, 1000, (size - q) // 8 + 1, (size + 8 - q) // 8 + 1)


@functools.cache
def calibrated(name: str) -> nn.Module:
    """A seeded float64 network with 10 classes; its batch norms take their statistics from one seeded batch.

    Built once per name and shared by the tests below, which leave it unchanged.
    """
    torch.manual_seed(0)
    model = convzoo.create_model(name, num_classes=10).double()
    x = torch.randn(2, 3, PATCH[name] + 16, PATCH[name] + 16, dtype=torch.float64)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("name", sorted(PATCH))
def test_one_pixel_changes_exactly_the_patches_that_contain_it(name):
    q = PATCH[name]
    model = calibrated(name)
    x = torch.randn(1, 3, q + 16, q + 16, dtype=torch.float64)  # a 3x3 evidence map
    row, col = 12, 20
    moved = x.clone()
    moved[0, :, row, col] += 1.0
    with torch.no_grad():
        change = (model.patch_logits(moved) - model.patch_logits(x)).abs().amax(1)[0]
    changed = {(i, j) for i in range(3) for j in range(3) if change[i, j] > 1e-10}
    expected = {(i, j) for i in range(3) for j in range(3) if 8 * i <= row < 8 * i + q and 8 * j <= col < 8 * j + q}
    assert changed == expected and expected


@pytest.mark.parametrize("name", sorted(PATCH))
def test_each_evidence_unit_depends_on_every_pixel_of_its_q_by_q_patch_and_no_other(name):
    q = PATCH[name]
    model = calibrated(name)
    x = torch.randn(1, 3, q + 16, q + 16, dtype=torch.float64, requires_grad=True)
    evidence = model.patch_logits(x)
    for i, j in ((0, 0), (1, 2), (2, 1)):
        (grad,) = torch.autograd.grad(evidence[0, :, i, j].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        patch = torch.zeros_like(support)
        patch[8 * i : 8 * i + q, 8 * j : 8 * j + q] = True
        assert torch.equal(support, patch), (i, j)


@pytest.mark.parametrize("name", sorted(PATCH))
def test_logits_are_the_average_class_evidence(name):
    q = PATCH[name]
    model = calibrated(name)
    x = torch.randn(2, 3, q + 8, q + 21, dtype=torch.float64)
    with torch.no_grad():
        evidence = model.patch_logits(x)
        assert evidence.shape == (2, 10, 2, 3)
        torch.testing.assert_close(model(x), evidence.mean((2, 3)), rtol=1e-12, atol=1e-12)
    with torch.device("meta"):
        headless = convzoo.create_model(name, num_classes=0)
    with pytest.raises(RuntimeError, match=f"{name} has no classifier"):
        headless.patch_logits(torch.empty(1, 3, q, q, device="meta"))


def test_shortcut_keeps_the_leading_positions_where_the_map_shrinks():
    torch.manual_seed(0)
    block = BagNetBottleneck(256, 64, kernel_size=3).eval()
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        out = block(x)
        branch = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        torch.testing.assert_close(out, torch.relu(branch + x[:, :, :6, :6]))
    strided = BagNetBottleneck(64, 64, stride=2, kernel_size=3).eval()
    with torch.no_grad():
        assert strided(torch.randn(1, 64, 9, 10)).shape == (1, 256, 4, 4)


@pytest.mark.parametrize("name", sorted(PATCH))
def test_too_small_input(name):
    q = PATCH[name]
    with torch.device("meta"):
        model = convzoo.create_model(name).eval()
        assert model.patch_logits(torch.empty(1, 3, q, q)).shape == (1, 1000, 1, 1)
        with pytest.raises(ValueError, match=rf"{name} needs images of at least {q}x{q} .*got {q - 1}x{q}"):
            model(torch.empty(1, 3, q - 1, q))
        # The check is the network's own limit: below q pixels an unpadded convolution runs out of input.
        x = model.relu(model.bn1(model.conv2(model.conv1(torch.empty(1, 3, q - 1, q - 1)))))
        with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
            for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
                x = stage(x)


def test_bad_configurations_and_keywords():
    with pytest.raises(ValueError, match="bagnet9: blocks_3x3 counts blocks of each stage"):
        convzoo.create_model("bagnet9", blocks_3x3=(1, 1, 7, 0))
    with pytest.raises(ValueError, match="bagnet17: layers, planes, strides and blocks_3x3 need one entry per stage"):
        convzoo.create_model("bagnet17", strides=(2, 2, 1))
    with pytest.raises(TypeError, match="bagnet33 got unexpected keyword argument.*'kernel3'.*accepted keys"):
        convzoo.create_model("bagnet33", kernel3=(1, 1, 1, 1))


def test_cards():
    for name, q in PATCH.items():
        card = convzoo.get_model_card(name)
        assert card.paper.venue == "ICLR" and card.paper.year == 2019 and f"{q}x{q} pixels" in card.notes
    assert "87.6%" in convzoo.get_model_card("bagnet33").notes


@pytest.mark.parametrize("name", sorted(PATCH))
def test_golden_outputs(name, golden):
    q = PATCH[name]
    model = calibrated(name)
    x = torch.randn(2, 3, q + 8, q + 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        evidence, logits = model.patch_logits(x), model(x)
    golden(name, {"logits": logits, "patch_logits": evidence}, model=name, input=[2, 3, q + 8, q + 8])
