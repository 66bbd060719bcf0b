"""The segmentation networks: convolutionalised classifiers, FCN and U-Net."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.analysis import count_params
from convzoo.segmentation._blocks import bilinear_kernel, bilinear_upsampling, crop
from convzoo.segmentation.convolutional import convolutionalize
from convzoo.segmentation.fcn import FCN
from convzoo.segmentation.unet import mirror_pad, predict_tiled, unet_output_size, valid_input_sizes

# A VGG with the layout of VGG16's pools and fc6 grid but few channels: the paper's FCN at a tiny cost.
TINY_VGG = {"layers": (8, "M", 8, "M", 16, "M", 16, "M", 16, "M"), "hidden": (32, 32)}


def randomise(model: nn.Module) -> nn.Module:
    """Non-zero weights everywhere (FCN's score layers start at zero), so outputs depend on every layer."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


# --- convolutionalising a classifier ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [("lenet5", {}), ("alexnet", {"hidden": (64, 48)}), ("vgg16", TINY_VGG)],
)
def test_fc_head_heat_map_equals_logits_at_the_input_size(name, args):
    model = convzoo.create_model(name, **args).eval()
    chans, height, width = model.card.input_size
    x = torch.randn(2, chans, height, width)
    fcn = convolutionalize(model).eval()
    first = next(m for m in fcn.head if isinstance(m, nn.Conv2d))
    assert first.kernel_size == model.avgpool.output_size or first.kernel_size == (model.avgpool.output_size,) * 2
    assert all(m.kernel_size == (1, 1) for m in fcn.head if isinstance(m, nn.Conv2d) and m is not first)
    with torch.no_grad():
        logits, heat = model(x), fcn(x)
    assert heat.shape == (2, model.num_classes, 1, 1)
    torch.testing.assert_close(heat[:, :, 0, 0], logits, atol=1e-5, rtol=1e-5)
    bigger = (height + 64, width + 32)
    with torch.no_grad():
        assert fcn(torch.randn(1, chans, *bigger)).shape[-2:] == fcn.output_size(bigger)


def test_heat_map_slides_the_classifier_over_the_image():
    # LeNet-5 has no padding: each heat-map pixel is exactly the classifier on its 32x32 window (stride 4).
    model = convzoo.create_model("lenet5").eval()
    fcn = convolutionalize(model).eval()
    x = torch.randn(1, 1, 48, 40)
    with torch.no_grad():
        heat = fcn(x)
        assert heat.shape == (1, 10, 5, 3)
        for i, j in [(0, 0), (4, 2), (2, 1)]:
            window = x[..., 4 * i : 4 * i + 32, 4 * j : 4 * j + 32]
            torch.testing.assert_close(heat[..., i, j], model(window), atol=1e-5, rtol=1e-5)


def test_adaptive_pool_is_folded_into_fc6():
    # At 256 pixels VGG's last map is 8x8 and the adaptive pool averages it to 7x7 before fc6.
    model = convzoo.create_model("vgg11", **TINY_VGG).eval()
    x = torch.randn(2, 3, 256, 256)
    fcn = convolutionalize(model, input_size=256).eval()
    assert fcn.head[0].kernel_size == (8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x)[:, :, 0, 0], model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "nin", "mobilenet_v1_025", "densenet_40_12"])
def test_pooled_head_heat_map_averages_to_the_logits(name):
    model = convzoo.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    fcn = convolutionalize(model).eval()
    with torch.no_grad():
        logits, heat = model(x), fcn(x)
    stride = model.feature_info[-1].reduction
    assert heat.shape == (2, model.num_classes, 32 // stride, 32 // stride)
    torch.testing.assert_close(heat.mean((2, 3)), logits, atol=1e-5, rtol=1e-4)
    assert fcn(torch.randn(1, 3, 64, 96)).shape[-2:] == (64 // stride, 96 // stride)


def test_convolutionalize_copies_unless_inplace():
    model = convzoo.create_model("resnet20")
    convolutionalize(model)
    assert isinstance(model.fc, nn.Linear)
    fcn = convolutionalize(model, inplace=True)
    assert model.num_classes == 0 and not isinstance(model.fc, nn.Linear)
    assert count_params(fcn) == count_params(convzoo.create_model("resnet20"))


def test_convolutionalize_refuses_classifiers_without_a_usable_head():
    with pytest.raises(ValueError, match="has no classifier"):
        convolutionalize(convzoo.create_model("resnet20", num_classes=0))
    with pytest.raises(TypeError, match="expects a convzoo classifier"):
        convolutionalize(nn.Linear(3, 4))
    model = convzoo.create_model("resnet20")
    pooled = model.forward_head
    model.forward_head = lambda x, pre_logits=False: torch.tanh(pooled(x, pre_logits))
    with pytest.raises(ValueError, match="not global average pooling followed by its output layer"):
        convolutionalize(model)


# --- FCN ----------------------------------------------------------------------------------------------------------


def test_bilinear_kernel_values():
    torch.testing.assert_close(bilinear_kernel(4), torch.outer(*[torch.tensor([0.25, 0.75, 0.75, 0.25])] * 2).double())
    torch.testing.assert_close(bilinear_kernel(3), torch.outer(*[torch.tensor([0.5, 1.0, 0.5])] * 2).double())
    assert bilinear_kernel(16)[7, 7] == pytest.approx((1 - 0.5 / 8) ** 2)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampling_interpolates(factor):
    x = torch.randn(1, 3, 6, 5)
    up = bilinear_upsampling(3, factor, padding=factor // 2)
    exact = nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    with torch.no_grad():
        y = up(x)
    assert y.shape == exact.shape
    inner = slice(factor, -factor)  # the border, where interpolation clamps and the convolution sees zeros
    torch.testing.assert_close(y[..., inner, inner], exact[..., inner, inner], atol=1e-5, rtol=1e-5)
    # Without padding (the reference nets) the same values sit factor/2 pixels further in.
    plain = bilinear_upsampling(3, factor)
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[..., factor // 2 : -(factor // 2), factor // 2 : -(factor // 2)], y)


@pytest.mark.parametrize(
    ("name", "params", "offsets"),
    [
        ("fcn32s", 136_152_917, {1: 19}),
        ("fcn16s", 134_815_994, {16: 5, 1: 27}),
        ("fcn8s", 134_489_759, {16: 5, 8: 9, 1: 31}),
    ],
)
def test_fcn_vgg16_matches_the_reference_nets(name, params, offsets):
    with torch.device("meta"):
        model = convzoo.create_model(name)
    assert count_params(model) == params
    assert model.offsets == offsets  # the crop offsets of voc-fcn32s/16s/8s
    fc6 = model.fc[0]
    assert fc6.weight.shape == (4096, 512, 7, 7) and model.score_fr.in_channels == 4096
    assert model.backbone.features[0].padding == (100, 100)
    assert convzoo.get_model_card(name).task == "segmentation" and model.num_classes == 21


def test_fcn_alexnet_aligns_with_an_odd_kernel():
    with torch.device("meta"):
        model = convzoo.create_model("fcn32s", backbone="alexnet")
    assert model.upscore32.kernel_size == (63, 63) and model.offsets == {1: 18}  # the reference FCN-AlexNet
    model = convzoo.create_model("fcn8s", num_classes=3, backbone="alexnet", backbone_args={"hidden": (16, 16)})
    assert model.upscore2.kernel_size == (3, 3) and model.offsets == {16: 5, 8: 10, 1: 18}
    assert model(torch.randn(1, 3, 64, 70)).shape == (1, 3, 64, 70)


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_fcn_output_covers_any_input(stride):
    model = convzoo.create_model(f"fcn{stride}s", num_classes=5, backbone="vgg11", backbone_args=TINY_VGG)
    assert model.offsets[1] == {32: 19, 16: 27, 8: 31}[stride]
    for size in [(32, 32), (37, 50), (64, 64), (101, 77)]:
        y = model(torch.randn(2, 3, *size))
        assert y.shape == (2, 5, *size) and model.output_size(size) == size


def test_fcn8s_equals_the_reference_forward():
    model = randomise(convzoo.create_model("fcn8s", num_classes=4, backbone="vgg11", backbone_args=TINY_VGG)).eval()
    x = torch.randn(1, 3, 45, 61)
    feats = model.backbone.features
    with torch.no_grad():
        pool3 = feats[:9](x)
        pool4 = feats[9:12](pool3)
        score = model.score_fr(model.fc(feats[12:](pool4)))
        up2 = model.upscore2(score)
        fuse4 = up2 + crop(model.score_pool4(pool4), (5, 5), up2.shape[-2:])
        up4 = model.upscore_pool4(fuse4)
        fuse3 = up4 + crop(model.score_pool3(pool3), (9, 9), up4.shape[-2:])
        expected = crop(model.upscore8(fuse3), (31, 31), x.shape[-2:])
        torch.testing.assert_close(model(x), expected)


def test_fcn_training_settings():
    model = convzoo.create_model("fcn8s", num_classes=3, backbone="resnet18")
    assert not model.upscore8.weight.requires_grad and model.upscore2.weight.requires_grad
    assert model.score_fr.weight.abs().sum() == 0 and model.score_pool3.weight.abs().sum() == 0
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 3, 64, 64) and out.abs().sum() == 0  # zero scores until trained
    out.sum().backward()
    assert model.score_fr.weight.grad.abs().sum() > 0 and model.score_pool3.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(64, 64), (45, 70)])
def test_fcn_on_a_residual_backbone_covers_any_input(size):
    model = randomise(convzoo.create_model("fcn8s", num_classes=3, backbone="resnet18", in_chans=1)).eval()
    assert [f.reduction for f in model.backbone.feature_info] == [8, 16, 32]
    with torch.no_grad():
        y = model(torch.randn(1, 1, *size))
    assert y.shape == (1, 3, *size) and y.abs().sum() > 0


def test_fcn_errors():
    with pytest.raises(ValueError, match=r"strides 32, 16, 8; 'resnet20' has strides 1, 2, 4"):
        convzoo.create_model("fcn8s", backbone="resnet20")
    with pytest.raises(TypeError, match=r"fcn16s got unexpected keyword argument\(s\) 'backbon'.*accepted keys:"):
        convzoo.create_model("fcn16s", backbon="resnet18")
    with pytest.raises(ValueError, match="output_stride must be 32, 16 or 8"):
        FCN(4, backbone="resnet18")
    model = convzoo.create_model("fcn32s", num_classes=3, backbone="vgg11", backbone_args=TINY_VGG)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\); got \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="needs images of at least 32x32; got 16x40"):
        model(torch.randn(1, 3, 16, 40))


# --- U-Net --------------------------------------------------------------------------------------------------------


def test_unet_original_is_the_papers():
    with torch.device("meta"):
        model = convzoo.create_model("unet_original")
    assert count_params(model) == 31_030_658  # 2 classes, 1-channel images
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 23
    assert all(m.padding == (0, 0) for m in convs)
    assert model.output_size((572, 572)) == (388, 388)
    assert model.output_size((572, 188)) == (388, 4)
    assert unet_output_size(571) is None and valid_input_sizes(1) == (None, 188)
    assert valid_input_sizes(500) == (492, 508)


def test_unet_original_forward_at_its_smallest_size():
    model = convzoo.create_model("unet_original", width=16)  # the paper's 64 only costs more time
    x = torch.randn(1, 1, 188, 188, requires_grad=True)
    y = model(x)
    assert y.shape == (1, 2, 4, 4) and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_unet_original_names_the_nearest_valid_sizes():
    model = convzoo.create_model("unet_original", width=2)
    with pytest.raises(ValueError, match="cannot take an image side of 200.*nearest valid sides are 188 or 204"):
        model(torch.randn(1, 1, 200, 188))
    with pytest.raises(ValueError, match="side of 100.*188 \\(the smallest\\)"):
        model.output_size((100, 100))
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 1, H, W\)"):
        model(torch.randn(1, 3, 188, 188))


def test_overlap_tiles_stitch_into_one_pass():
    model = convzoo.create_model("unet_original", width=4).eval()
    image = torch.randn(2, 1, 36, 52)  # mirrored by 92 pixels: 220x236, one valid pass
    with torch.no_grad():
        whole = model(mirror_pad(image, (92, 92, 92, 92)))
    tiled = predict_tiled(model, image, tile=204, batch_size=3)  # 20-pixel outputs, 3x4 overlapping tiles
    assert tiled.shape == whole.shape == (2, 2, 36, 52)
    torch.testing.assert_close(tiled, whole)
    assert predict_tiled(model, torch.randn(1, 1, 50, 37)).shape == (1, 2, 50, 37)
    with pytest.raises(ValueError, match="fewer than 16"):
        predict_tiled(model, image, tile=188)


def test_mirror_pad_reflects_repeatedly():
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    assert mirror_pad(x, (0, 0, 5, 1))[0, 0, 0].tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1]


def test_unet_small_learns():
    torch.manual_seed(0)
    model = convzoo.create_model("unet_small", num_classes=3, width=4, depth=2)
    x = torch.randn(8, 3, 16, 16)
    target = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_unet_small_keeps_the_size():
    model = convzoo.create_model("unet_small", num_classes=7)
    assert model(torch.randn(2, 3, 64, 48)).shape == (2, 7, 64, 48)
    with pytest.raises(ValueError, match="divisible by 16.*got 60: try 48 or 64"):
        model(torch.randn(1, 3, 60, 64))


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v1_025", "vgg11"])
def test_unet_on_a_backbone(backbone):
    args = {"backbone_args": TINY_VGG} if backbone == "vgg11" else {}
    model = convzoo.create_model("unet", backbone=backbone, num_classes=4, in_chans=2, **args)
    x = torch.randn(2, 2, 64, 96, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 4, 64, 96) and model.output_size((64, 96)) == (64, 96)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by its encoder's total stride 32; got 48x64"):
        model(torch.randn(1, 2, 48, 64))
    with pytest.raises(TypeError, match="'decoder_widht'.*did you mean 'decoder_width'"):
        convzoo.create_model("unet", decoder_widht=8)


def test_segmentation_cards():
    names = convzoo.list_models(task="segmentation")
    ours = {"fcn32s", "fcn16s", "fcn8s", "unet", "unet_original", "unet_small"}
    assert ours <= set(names) and not ours & set(convzoo.list_models())
    for name in ours:
        card = convzoo.get_model_card(name)
        assert card.task == "segmentation" and card.paper.year == 2015 and card.notes
    assert (
        convzoo.get_model_card("fcn8s").num_classes == 21 and convzoo.get_model_card("unet_original").num_classes == 2
    )


@pytest.mark.slow
def test_fcn8s_vgg16_full_size_forward():
    model = convzoo.create_model("fcn8s").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 70, 90)).shape == (1, 21, 70, 90)
