"""Analysis across the whole zoo, and the seeds' hand-computed numbers."""

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import convzoo


@pytest.mark.parametrize("name", convzoo.list_models())
def test_every_model_summarises_on_the_meta_device(name):
    card = convzoo.get_model_card(name)
    s = convzoo.summary(name, depth=1)
    with torch.device("meta"):
        assert s.total_params == convzoo.count_params(convzoo.create_model(name))
    assert s.output_shape == (1, card.num_classes)
    assert s.total_macs > 0 and s.activation_bytes > 0 and s.training_bytes > 0
    assert s.output_rf is not None and s.output_rf.is_global  # a classifier's output sees the whole image
    spatial = [r for r in s.rows if r.rf is not None and not r.rf.is_global]
    assert spatial, "some layer must have a local receptive field"


PEERS = {
    "alexnet": 64,
    "vgg11": 32,
    "googlenet": 64,
    "inception_v3": 80,
    "densenet121": 64,
    "mobilenet_v2": 64,
    "squeezenet1_1": 64,
}


@pytest.mark.parametrize("name", sorted(PEERS))
def test_macs_agree_with_the_flop_counter_on_torchvision(name):
    size = PEERS[name]
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
    reference = getattr(torchvision.models, name)(**kwargs).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.zeros(1, 3, size, size))
    assert convzoo.summary(name, (3, size, size), depth=1).total_macs == counter.get_total_flops() // 2


def test_alexnet_conv1_as_in_the_lecture():
    # Seed 004: 227x227x3 input, 96 11x11 filters at stride 4: output 55x55x96, (11*11*3 + 1) * 96 = 34,944 params.
    s = convzoo.summary("alexnet_2012", (3, 227, 227), depth=9)
    conv1 = next(r for r in s.rows if r.type == "Conv2d")
    assert conv1.output_shape == (1, 96, 55, 55) and conv1.params == 34_944
    assert str(conv1.rf) == "11" and conv1.rf.jump == (4, 4)


# Seed 004's VGG16 table: (layer, activations, weights) with weights counted without biases, as the slide does.
VGG16_TABLE = [
    ("conv", 224 * 224 * 64, 3 * 3 * 3 * 64),
    ("conv", 224 * 224 * 64, 3 * 3 * 64 * 64),
    ("pool", 112 * 112 * 64, 0),
    ("conv", 112 * 112 * 128, 3 * 3 * 64 * 128),
    ("conv", 112 * 112 * 128, 3 * 3 * 128 * 128),
    ("pool", 56 * 56 * 128, 0),
    ("conv", 56 * 56 * 256, 3 * 3 * 128 * 256),
    ("conv", 56 * 56 * 256, 3 * 3 * 256 * 256),
    ("conv", 56 * 56 * 256, 3 * 3 * 256 * 256),
    ("pool", 28 * 28 * 256, 0),
    ("conv", 28 * 28 * 512, 3 * 3 * 256 * 512),
    ("conv", 28 * 28 * 512, 3 * 3 * 512 * 512),
    ("conv", 28 * 28 * 512, 3 * 3 * 512 * 512),
    ("pool", 14 * 14 * 512, 0),
    ("conv", 14 * 14 * 512, 3 * 3 * 512 * 512),
    ("conv", 14 * 14 * 512, 3 * 3 * 512 * 512),
    ("conv", 14 * 14 * 512, 3 * 3 * 512 * 512),
    ("pool", 7 * 7 * 512, 0),
    ("fc", 4096, 7 * 7 * 512 * 4096),
    ("fc", 4096, 4096 * 4096),
    ("fc", 1000, 4096 * 1000),
]


def test_vgg16_memory_and_parameter_table():
    s = convzoo.summary("vgg16", depth=9)
    kinds = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.Linear: "fc"}
    model = convzoo.create_model("vgg16")
    types = {name: type(m) for name, m in model.named_modules()}
    rows = [r for r in s.rows if types.get(r.name) in kinds]
    assert len(rows) == len(VGG16_TABLE)
    for row, (kind, activations, weights) in zip(rows, VGG16_TABLE):
        assert kinds[types[row.name]] == kind
        assert int(torch.tensor(row.output_shape[1:]).prod()) == activations
        bias = row.output_shape[1] if kind != "pool" else 0
        assert row.params - bias == weights
    assert round(s.total_params / 1e6) == 138
    # The slide totals "24M" activations (96 MB per image); its own rows, with the 150K input, add up to 15.2M.
    listed = 3 * 224 * 224 + sum(a for _, a, _ in VGG16_TABLE)
    assert round(listed / 1e6, 1) == 15.2
    assert sum(w for _, _, w in VGG16_TABLE) == 138_344_128  # weights without biases; 138,357,544 with them
