"""NASNet-A: the paper's parameter and multiply-add figures, the searched cells, the peers' layouts, golden outputs."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convzoo
from convzoo.layers.nas import (
    Cell,
    CellSpec,
    FactorizedReduction,
    SamePool2d,
    SeparableStack,
    drop_path,
    same_padding,
)
from convzoo.models.base import AuxOutputs, classification_loss
from convzoo.models.nasnet import NORMAL_CELL, REDUCTION_CELL, NASNet

EXPECT = Path(__file__).parents[1] / "expect"
NAMES = ("nasnet_a_mobile", "nasnet_a_large")


def meta_model(name: str, **kwargs) -> NASNet:
    with torch.device("meta"):
        return convzoo.create_model(name, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Parameters and multiply-adds.

# The two PyTorch ports of the TensorFlow-slim weights, 1000 classes: Cadene's pretrainedmodels NASNetAMobile
# (5,289,978) and timm's nasnetalarge, itself Cadene's NASNetALarge (88,753,150). Keras' NASNetMobile and NASNetLarge
# list the same figures as their trainable parameters.
EXACT_PARAMS = {"nasnet_a_mobile": 5_289_978, "nasnet_a_large": 88_753_150}

# The paper's 5.3M (Table 3) and 88.9M (Table 2) count the TensorFlow model's variables, batch norm's moving means
# and variances included (the parameters alone, 88.75M, would round to 88.8M): with them the counts equal Keras'
# "Total params" for NASNetMobile and NASNetLarge, 5,326,716 and 88,949,818.
WITH_BN_STATISTICS = {"nasnet_a_mobile": (5_326_716, 5.3), "nasnet_a_large": (88_949_818, 88.9)}

# Multiply-adds at the card's resolution, and the paper's figures: 564M (Table 3) and 23.8B (Table 2).
EXACT_MACS = {"nasnet_a_mobile": (563_638_816, 564e6), "nasnet_a_large": (23_783_414_658, 23.8e9)}


@pytest.mark.parametrize("name", NAMES)
def test_exact_parameter_counts(name):
    assert convzoo.count_params(meta_model(name)) == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_paper_counts_include_batch_norm_statistics(name):
    model = meta_model(name)
    statistics = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    total, paper_millions = WITH_BN_STATISTICS[name]
    assert convzoo.count_params(model) + statistics == total
    assert round(total / 1e6, 1) == paper_millions


@pytest.mark.parametrize("name", NAMES)
def test_multiply_adds_match_the_paper(name):
    exact, paper = EXACT_MACS[name]
    count = convzoo.count_macs(meta_model(name), convzoo.get_model_card(name).input_size)
    assert count == exact
    # The paper rounds to three significant figures: within half a unit of the last one.
    assert abs(count - paper) <= 0.005 * paper


# ----------------------------------------------------------------------------------------------------------------
# The searched cells (Zoph et al. Figure 4) and how the network stacks them.

# Figure 4 in the paper's own terms: each block is "op(input) + op(input)"; h is the cell input h_i, h_prev is
# h_{i-1}, and b0..b4 are earlier blocks of the same cell.
PAPER_NORMAL = [
    "sep5x5(h) + sep3x3(h_prev)",
    "sep5x5(h_prev) + sep3x3(h_prev)",
    "avg3x3(h) + identity(h_prev)",
    "avg3x3(h_prev) + avg3x3(h_prev)",
    "sep3x3(h) + identity(h)",
]
PAPER_REDUCTION = [
    "sep5x5(h) + sep7x7(h_prev)",
    "max3x3(h) + sep7x7(h_prev)",
    "avg3x3(h) + sep5x5(h_prev)",
    "identity(b1) + avg3x3(b0)",
    "sep3x3(b0) + max3x3(h)",
]


def describe(spec: CellSpec) -> list[str]:
    state = {0: "h", 1: "h_prev"} | {2 + b: f"b{b}" for b in range(5)}
    return [" + ".join(f"{op}({state[i]})" for op, i in block) for block in spec.blocks]


def test_cell_tables_hold_the_papers_operations():
    assert describe(NORMAL_CELL) == PAPER_NORMAL
    assert describe(REDUCTION_CELL) == PAPER_REDUCTION
    # TensorFlow-slim's used_hiddenstates: the normal cell concatenates h_{i-1} and its five blocks, the reduction
    # cell all blocks but block 0 (block 1 too, although block 3 also reads it).
    assert NORMAL_CELL.concat == (1, 2, 3, 4, 5, 6)
    assert REDUCTION_CELL.concat == (3, 4, 5, 6)


def op_of(module: nn.Module) -> str:
    if isinstance(module, SeparableStack):
        k = module.separable_1.depthwise_conv2d.kernel_size[0]
        assert module.separable_2.depthwise_conv2d.kernel_size[0] == k  # applied twice
        return f"sep{k}x{k}"
    if isinstance(module, SamePool2d):
        return f"{module.kind}{module.kernel_size}x{module.kernel_size}"
    assert isinstance(module, nn.Identity)
    return "identity"


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_is_built_from_its_table(name):
    model = meta_model(name)
    n = model.cfg.cells_per_stack
    kinds = Counter()
    for cell_name in model.cell_names:
        cell = getattr(model, cell_name)
        reduction = cell_name.startswith(("cell_stem", "reduction"))
        kinds["reduction" if reduction else "normal"] += 1
        spec = REDUCTION_CELL if reduction else NORMAL_CELL
        assert cell.spec is spec and cell.stride == (2 if reduction else 1)
        for b, ((op_l, _), (op_r, _)) in enumerate(spec.blocks):
            assert op_of(getattr(cell, f"comb_iter_{b}_left")) == op_l
            assert op_of(getattr(cell, f"comb_iter_{b}_right")) == op_r
    assert kinds == {"normal": 3 * n, "reduction": 4}  # two stem cells and two between the stacks


@pytest.fixture(scope="module")
def mobile() -> NASNet:
    torch.manual_seed(0)
    return convzoo.create_model("nasnet_a_mobile").eval()


def test_cells_keep_or_halve_the_size_and_taps_follow_the_reductions(mobile):
    width = mobile.cfg.width
    shapes = {}
    hooks = [
        getattr(mobile, name).register_forward_hook(
            lambda m, inputs, out, name=name: shapes.__setitem__(name, (inputs[0].shape, out.shape))
        )
        for name in mobile.cell_names
    ]
    try:
        with torch.no_grad():
            maps = mobile.forward_intermediates(torch.randn(1, 3, 64, 64), stop_early=False)
    finally:
        for h in hooks:
            h.remove()
    widths = {"cell_stem_0": width // 4, "cell_stem_1": width // 2, "reduction_cell_0": 2 * width}
    widths |= {"reduction_cell_1": 4 * width} | {f"cell_{i}": width * 2 ** (i // 4) for i in range(12)}
    assert shapes.keys() == widths.keys()
    for name, (x, out) in shapes.items():
        if getattr(mobile, name).stride == 1:
            assert out[-2:] == x[-2:], name
            assert out[1] == 6 * widths[name], name  # h_{i-1} and five blocks
        else:
            assert out[-2:] == tuple(-(-s // 2) for s in x[-2:]), name
            assert out[1] == 4 * widths[name], name  # blocks 1 to 4
    assert mobile.num_features == 24 * width == 1056
    for info, m in zip(mobile.feature_info, maps):
        assert m.shape[1:] == (info.num_chs, 64 // info.reduction, 64 // info.reduction), info
        assert m.min() >= 0  # taken after the ReLU with which the next cell reads them


def test_previous_inputs_follow_tensorflow_slim():
    # Mobile: the cell after a reduction reads the cell just before it; Large (skip_reduction_layer_input) the
    # cell two before it. Output 0 is the stem convolution; the first stem cell reads it in place of h_{i-1}.
    def wiring(model):
        names = ["conv0", *model.cell_names]
        return {cell: (names[cur], names[prev]) for cell, cur, prev in model.wiring}

    mobile, large = wiring(meta_model("nasnet_a_mobile")), wiring(meta_model("nasnet_a_large"))
    assert mobile["cell_stem_0"] == large["cell_stem_0"] == ("conv0", "conv0")
    assert mobile["cell_stem_1"] == large["cell_stem_1"] == ("cell_stem_0", "conv0")
    assert mobile["cell_0"] == large["cell_0"] == ("cell_stem_1", "cell_stem_0")
    assert mobile["reduction_cell_0"] == ("cell_3", "cell_2")
    assert mobile["cell_4"] == ("reduction_cell_0", "cell_3")
    assert large["reduction_cell_0"] == ("cell_5", "cell_4")
    assert large["cell_6"] == ("reduction_cell_0", "cell_4")
    assert large["cell_12"] == ("reduction_cell_1", "cell_10")
    assert large["cell_13"] == ("cell_12", "reduction_cell_1")


@pytest.mark.parametrize("name", NAMES)
def test_feature_info_taps_the_stem_and_each_stack(name):
    model = meta_model(name)
    width = model.cfg.width
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]
    assert [f.num_chs for f in model.feature_info] == [width, 6 * width, 12 * width, 24 * width]


# ----------------------------------------------------------------------------------------------------------------
# TensorFlow's padding and the factorized reduction.


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(224, 7, 2) == (2, 3)
    assert same_padding(111, 5, 2) == (2, 2)
    assert same_padding(7, 3, 1) == (1, 1)


def test_same_pooling_ignores_padding():
    x = torch.randn(1, 2, 6, 7)
    for kind, reduce in (("avg", torch.mean), ("max", torch.amax)):
        for stride in (1, 2):
            out = SamePool2d(kind, 3, stride)(x)
            (top, _), (left, _) = same_padding(6, 3, stride), same_padding(7, 3, stride)
            assert out.shape[-2:] == (-(-6 // stride), -(-7 // stride))
            for i in range(out.shape[-2]):
                for j in range(out.shape[-1]):
                    r, c = i * stride - top, j * stride - left
                    window = x[:, :, max(r, 0) : r + 3, max(c, 0) : c + 3]  # the real pixels under the window
                    torch.testing.assert_close(out[:, :, i, j], reduce(window, dim=(-2, -1)))


def test_factorized_reduction_reads_both_pixel_grids():
    reduce = FactorizedReduction(1, 2)
    with torch.no_grad():
        reduce.path_1.weight.fill_(1.0)
        reduce.path_2.weight.fill_(1.0)
    reduce.bn.eval()  # running statistics 0 and 1: the normalisation is (almost) the identity
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    out = reduce(x) * (1 + reduce.bn.eps) ** 0.5
    torch.testing.assert_close(out[0, 0], x[0, 0, ::2, ::2])
    shifted = F.pad(x[0, 0, 1:, 1:], (0, 1, 0, 1))  # offset (1, 1), zeros past the edge
    torch.testing.assert_close(out[0, 1], shifted[::2, ::2])
    with pytest.raises(ValueError, match="two halves; got 3 channels"):
        FactorizedReduction(4, 3)


# ----------------------------------------------------------------------------------------------------------------
# The peers' weights: every parameter of their ports has its counterpart here, with the same shape.


@pytest.mark.parametrize("name", NAMES)
def test_peer_parameters_map_one_to_one(name):
    peer = json.loads((EXPECT / "nasnet_peer_parameters.json").read_text())[name]
    model = meta_model(name)
    ours = {k: list(p.shape) for k, p in model.named_parameters()}
    remapped = dict(zip(model.remap_state_dict(dict.fromkeys(peer)), peer.values()))
    assert remapped == ours
    assert model.remap_state_dict(dict.fromkeys(ours)).keys() == ours.keys()  # already converted: unchanged


def to_cadene_layout(model: NASNet) -> dict[str, torch.Tensor]:
    """A NASNet-A Mobile state_dict named as Cadene's port names it (the layout of its published weights)."""
    n = model.cfg.cells_per_stack
    renumber = {n * stack + j: 6 * stack + j for stack in range(3) for j in range(n)}
    state = {}
    for key, value in model.state_dict().items():
        cell, _, rest = key.partition(".")
        if rest.startswith("prev_proj."):
            rest = rest.removeprefix("prev_proj.")
            if isinstance(getattr(model, cell).prev_proj, FactorizedReduction):
                rest = re.sub(r"^bn\.", "final_path_bn.", re.sub(r"^(path_[12])\.", r"\1.conv.", rest))
            else:
                rest = "conv_prev_1x1." + rest
        if number := re.fullmatch(r"cell_(\d+)", cell):
            cell = f"cell_{renumber[int(number.group(1))]}"
        state[f"{cell}.{rest}"] = value
    return state


def test_weights_in_the_peer_layout_load_and_give_the_same_outputs():
    torch.manual_seed(0)
    source = convzoo.create_model("nasnet_a_mobile", num_classes=5).eval()
    state = to_cadene_layout(source)
    assert "cell_15.conv_prev_1x1.conv.weight" in state and "cell_6.path_1.conv.weight" in state
    assert "cell_6.final_path_bn.running_var" in state and "cell_4.conv_1x1.conv.weight" not in state
    target = convzoo.load_weights(convzoo.create_model("nasnet_a_mobile", num_classes=5), state).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


# ----------------------------------------------------------------------------------------------------------------
# Options: auxiliary head, scheduled drop-path.


def test_auxiliary_head_spans_the_pooled_map():
    # TensorFlow-slim's 768-filter convolution covers the whole 5x5/3-pooled stride-16 map: 4x4 at 224, 6x6 at 331.
    assert meta_model("nasnet_a_mobile", aux_head=True).aux_head.conv.kernel_size == (4, 4)
    assert meta_model("nasnet_a_large", aux_head=True).aux_head.conv.kernel_size == (6, 6)


# NASNet-A Mobile slimmed to one cell per stack and 8-channel cells: the same code paths at a fraction of the cost.
SLIM = {"cells_per_stack": 1, "penultimate_filters": 192}


def test_auxiliary_head_in_training_only():
    torch.manual_seed(0)
    model = convzoo.create_model("nasnet_a_mobile", aux_head=True, num_classes=5, **SLIM)
    assert model.aux_head.conv.kernel_size == (4, 4)
    assert model.min_input_size == 67  # the 5x5 pool needs a 5x5 stride-16 map
    with pytest.raises(ValueError, match="at least 67x67"):
        model(torch.randn(1, 3, 66, 66))
    x = torch.randn(2, 3, 72, 72)  # a 5x5 stride-16 map, pooled to 1x1 and resampled to the head's 4x4
    out = model.train()(x)
    assert isinstance(out, AuxOutputs) and out.aux_weights == (0.4,)
    assert out.logits.shape == out.aux_logits[0].shape == (2, 5)
    classification_loss(out, torch.tensor([0, 3])).backward()
    assert model.aux_head.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 5)
    model.reset_classifier(3)
    assert model.aux_head.fc.out_features == 3
    model.reset_classifier(0)
    with torch.no_grad():
        assert model.train()(x).shape == (2, 192)  # no classes, no auxiliary logits


def test_scheduled_drop_path_grows_with_depth_and_progress():
    model = meta_model("nasnet_a_mobile", drop_path_rate=0.3)
    cells = [getattr(model, name) for name in model.cell_names]
    assert len(cells) == 16  # 12 normal, 2 reduction and 2 stem cells, as TensorFlow-slim counts them
    assert [c.drop_prob for c in cells] == pytest.approx([0.3 * (i + 1) / 16 for i in range(16)])
    model.set_training_progress(0.5)
    assert cells[-1].drop_prob == pytest.approx(0.15)
    with pytest.raises(ValueError, match=r"progress must lie in \[0, 1\]"):
        model.set_training_progress(1.5)


def test_drop_path_acts_in_training_only():
    torch.manual_seed(0)
    model = convzoo.create_model("nasnet_a_mobile", drop_path_rate=0.3, drop_rate=0.0, **SLIM)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model.set_training_progress(0.0)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # at the start of training nothing is dropped
        model.set_training_progress(1.0)
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    x = torch.ones(1000, 3, 2, 2)
    out = drop_path(x, 0.25, training=True)
    per_sample = out.flatten(1)
    assert per_sample.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.05
    assert drop_path(x, 0.25, training=False) is x


# ----------------------------------------------------------------------------------------------------------------
# Bad input, impossible configurations, the model cards, golden outputs.


def test_too_small_or_wrong_input_is_refused(mobile):
    assert mobile.min_input_size == 32
    with pytest.raises(ValueError, match=r"nasnet_a_mobile needs images of at least 32x32 .*got 31x40"):
        mobile(torch.randn(1, 3, 31, 40))
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, 3, H, W\)"):
        mobile(torch.randn(1, 1, 32, 32))
    with torch.no_grad():
        assert mobile(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"penultimate_filters": 1000}, "penultimate_filters must be a positive multiple of 24"),
        (
            {"penultimate_filters": 1008},
            r"cells 42 wide.*even widths.*multiple of 4: use a multiple of 96 \(e.g. 960\)",
        ),
        ({"cells_per_stack": 0}, "at least one normal cell"),
        ({"stem_filters": 0}, "stem_filters must be positive"),
        ({"drop_path_rate": 1.0}, r"must lie in \[0, 1\)"),
        ({"aux_head": True, "image_size": 64}, "image_size >= 67; got 64"),
    ],
)
def test_impossible_configurations_are_explained(overrides, message):
    with pytest.raises(ValueError, match=f"nasnet_a_mobile: .*{message}"):
        meta_model("nasnet_a_mobile", **overrides)


def test_unknown_options_are_named():
    with pytest.raises(TypeError, match="nasnet_a_large got unexpected keyword argument.*'num_cells'.*accepted keys"):
        meta_model("nasnet_a_large", num_cells=18)


def test_cells_refuse_operations_that_would_need_a_projection():
    spec = CellSpec(blocks=((("identity", 1), ("sep3x3", 0)),), concat=(2,))
    with pytest.raises(ValueError, match="identity cannot change the width or resolution"):
        Cell(spec, 8, 16, 8, stride=2)
    with pytest.raises(ValueError, match="unknown operation 'conv3x3'"):
        Cell(CellSpec(blocks=((("conv3x3", 0), ("sep3x3", 0)),), concat=(2,)), 8, 8, 8)
    with pytest.raises(ValueError, match="reads hidden state 3, which does not exist yet"):
        Cell(CellSpec(blocks=((("sep3x3", 3), ("sep3x3", 0)),), concat=(2,)), 8, 8, 8)
    with pytest.raises(ValueError, match=r"concatenated states \(0, 2\) do not all have the cell's shape"):
        Cell(CellSpec(blocks=((("sep3x3", 0), ("sep3x3", 1)),), concat=(0, 2)), 8, 8, 8, stride=2)
    with pytest.raises(ValueError, match="at most twice the size of h_i; got a factor of 4"):
        Cell(NORMAL_CELL, 8, 8, 8, prev_stride=4)


def test_cards_cite_the_tables():
    mobile, large = convzoo.get_model_card("nasnet_a_mobile"), convzoo.get_model_card("nasnet_a_large")
    assert mobile.input_size == (3, 224, 224) and large.input_size == (3, 331, 331)
    assert [(r.metric, r.value, r.source) for r in mobile.reported] == [
        ("top-1 accuracy", 74.0, "Table 3"),
        ("top-5 accuracy", 91.6, "Table 3"),
    ]
    assert [(r.metric, r.value, r.source) for r in large.reported] == [
        ("top-1 accuracy", 82.7, "Table 2"),
        ("top-5 accuracy", 96.2, "Table 2"),
    ]
    assert mobile.paper.year == 2018 and mobile.paper.venue == "CVPR" and mobile.top1_accuracy() == 74.0


def test_golden_outputs(golden):
    # 48 pixels: the stem convolution leaves 23, then 12, 6, 3 and 2: symmetric and lopsided "SAME" padding alike.
    name = "nasnet_a_mobile"
    golden(name, {"logits": golden.calibrated_logits(name, 48)}, model=name, input=[2, 3, 48, 48])
