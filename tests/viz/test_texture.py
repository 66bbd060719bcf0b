"""Shape vs texture bias: the cue-conflict stimuli, the counting, the 16-category mapping and the command."""

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

from convzoo.cli import main
from convzoo.data import make_shapes
from convzoo.data.shapes import SHAPES
from convzoo.pretrained import Preprocessing
from convzoo.train import TrainConfig, Trainer
from convzoo.viz._load import Network
from convzoo.viz.imagenet16 import (
    CATEGORIES,
    IMAGENET_INDICES,
    category_probabilities,
    find_stimuli,
    parse_stimulus_name,
)
from convzoo.viz.texture import (
    CLASS_TEXTURES,
    CUE_TEXTURES,
    ShapeBias,
    make_cue_shapes,
    measure_shape_bias,
    shape_bias,
    shape_bias_table,
    write_shape_bias_report,
)

# The ImageNet indices of the 16 categories as Geirhos et al. list them (model-vs-human, helper/human_categories.py).
PAPER_INDICES = {
    "airplane": [404],
    "bear": [294, 295, 296, 297],
    "bicycle": [444, 671],
    "bird": [8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92, 93, 94,
             95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140, 141, 142, 143,
             144, 145],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286],
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171,
            172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
            193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207, 208, 209, 210, 211, 212, 213,
            214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 228, 229, 230, 231, 232, 233, 234,
            235, 236, 237, 238, 239, 240, 241, 243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256,
            257, 259, 261, 262, 263, 265, 266, 267, 268],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}  # fmt: skip

# A quarter-width ResNet-8: trains on 1,000 32x32 images in seconds on a CPU and still learns either cue.
SMALL_NET = {"layers": (1, 1, 1), "planes": (8, 16, 32), "stem_width": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of two small networks: one trained on textures alone, one on silhouettes alone."""
    out = tmp_path_factory.mktemp("cue-runs")
    runs = {}
    for cue in ("texture", "shape"):
        train = make_cue_shapes(1000, cue=cue, image_size=32, seed=0, split="train")
        test = make_cue_shapes(300, cue=cue, image_size=32, seed=0, split="test")
        config = TrainConfig(
            model="resnet20",
            model_args=SMALL_NET,
            data=train.name,
            image_size=32,
            recipe_overrides={"epochs": 6, "batch_size": 32, "lr": 0.1},
            out=str(out / cue),
            progress=False,
            deterministic=True,
        )
        Trainer(config, datasets=(train, test)).run()
        runs[cue] = out / cue / "last.pt"
    return runs


# -- the generated stimuli ------------------------------------------------------------------------------------------


def test_cue_shapes_label_the_chosen_cue():
    conflict = make_cue_shapes(360, cue="conflict", image_size=24, seed=3)
    shape, texture = conflict.extras["shape"], conflict.extras["texture"]
    assert conflict.classes == list(SHAPES)
    assert torch.equal(conflict.labels, shape) and bool((shape != texture).all())
    pairs = torch.bincount(shape * len(SHAPES) + texture, minlength=len(SHAPES) ** 2).view(len(SHAPES), -1)
    assert bool((pairs[~torch.eye(len(SHAPES), dtype=torch.bool)] > 0).all())  # every pair of different classes

    both = make_cue_shapes(120, cue="both", image_size=24, seed=3)
    assert torch.equal(both.extras["texture"], both.extras["shape"])
    by_texture = make_cue_shapes(360, cue="texture", image_size=24, seed=3)
    assert torch.equal(by_texture.labels, by_texture.extras["texture"])
    by_shape = make_cue_shapes(360, cue="shape", image_size=24, seed=3)
    assert torch.equal(by_shape.labels, by_shape.extras["shape"])
    # Independent cues: every (shape, texture) pair occurs, the matching ones included.
    joint = by_shape.extras["shape"] * len(SHAPES) + by_shape.extras["texture"]
    assert torch.bincount(joint, minlength=len(SHAPES) ** 2).min() > 0


def test_cue_shapes_keep_the_silhouettes_and_backgrounds_of_make_shapes():
    data = make_cue_shapes(60, cue="conflict", image_size=32, seed=5, split="x")
    base = make_shapes(60, image_size=32, seed=5, split="x")
    masks = data.extras["masks"]
    assert torch.equal(masks, base.extras["masks"]) and torch.equal(data.extras["shape"], base.labels)
    outside = ~masks.unsqueeze(1).expand_as(data.images)
    assert torch.equal(data.images[outside], base.images[outside])
    again = make_cue_shapes(60, cue="conflict", image_size=32, seed=5, split="x")
    assert torch.equal(again.images, data.images)
    assert not torch.equal(make_cue_shapes(60, cue="conflict", image_size=32, seed=6, split="x").images, data.images)


def test_each_class_owns_its_texture():
    assert list(CLASS_TEXTURES) == list(SHAPES) and len(set(CUE_TEXTURES)) == len(SHAPES)
    data = make_cue_shapes(120, cue="both", image_size=32, seed=1)
    masks = data.extras["masks"]
    for i in range(len(data)):
        inside = data.images[i][:, masks[i]]  # (3, pixels)
        colours = torch.unique(inside, dim=1).shape[1]
        kind = CUE_TEXTURES[int(data.labels[i])]
        if kind == "plain":
            assert colours == 1
        elif kind == "noise":
            assert colours > 4
        else:  # two-tone patterns: the main colour and its tint
            assert colours == 2


def test_cue_shapes_reject_an_unknown_cue():
    with pytest.raises(ValueError, match="unknown cue 'colour'"):
        make_cue_shapes(10, cue="colour")


# -- the counting ---------------------------------------------------------------------------------------------------


def test_shape_bias_counts_by_hand():
    # categories a, b, c; per stimulus: (decision, shape, texture)
    rows = [
        (0, 0, 1),  # shape a: shape decision
        (0, 0, 2),  # shape a: shape decision
        (1, 0, 1),  # shape a: texture decision
        (2, 0, 1),  # shape a: neither: does not count
        (2, 1, 2),  # shape b: texture decision
        (0, 1, 2),  # shape b: neither
        (1, 1, 1),  # same category for both cues: dropped
        (0, 2, 2),  # dropped
    ]
    decisions, shapes, textures = zip(*rows, strict=True)
    result = shape_bias(decisions, shapes, textures, ["a", "b", "c"])
    assert result.shape == [2, 0, 0]
    assert result.texture == [1, 1, 0]
    assert result.other == [1, 1, 0]
    assert result.dropped == 2 and result.count == 6
    assert result.overall == pytest.approx(2 / 4)
    a, b, c = result.per_category
    assert a == pytest.approx(2 / 3) and b == 0.0 and math.isnan(c)

    table = shape_bias_table(result)
    assert [row[0] for row in table.rows] == ["a", "b", "c", "all"]
    assert table.rows[-1][1:4] == (2, 2, 2) and table.rows[-1][4] == pytest.approx(0.5)
    assert table.rows[2][4] is None  # no decision for either cue: no bias, not 0


def test_shape_bias_without_decisions_for_either_cue_is_undefined():
    result = shape_bias([2, 2], [0, 1], [1, 0], ["a", "b", "c"])
    assert math.isnan(result.overall) and result.other == [1, 1, 0]


def test_shape_bias_rejects_bad_input():
    with pytest.raises(ValueError, match="must match"):
        shape_bias([0, 1], [0], [1], ["a", "b"])
    with pytest.raises(ValueError, match="outside the 2 categories"):
        shape_bias([0, 5], [0, 1], [1, 0], ["a", "b"])


# -- networks trained on one cue --------------------------------------------------------------------------------------


def test_a_network_trained_on_textures_decides_by_texture(trained):
    result = measure_shape_bias(trained["texture"], "shapes", count=600, seed=1)
    assert result.categories == list(SHAPES) and result.count == 600 and result.dropped == 0
    assert result.overall < 0.3
    assert sum(result.texture) > 0.6 * result.count  # it mostly names the texture, not some third class


def test_a_network_trained_on_silhouettes_decides_by_shape(trained):
    result = measure_shape_bias(trained["shape"], "shapes", count=600, seed=1)
    assert result.overall > 0.7
    assert sum(result.shape) > 0.6 * result.count
    assert sum(b > 0.5 for b in result.per_category if not math.isnan(b)) >= 5


def test_a_network_of_some_shapes_classes_is_measured_on_those():
    classes = ["star", "circle", "cross"]
    network = _network(_Constant(3, 0), classes, size=32)
    result = measure_shape_bias(network, "shapes", count=90)
    assert result.categories == classes and result.count == 90
    # It always says "star": a shape decision on star silhouettes, a texture decision on star textures.
    assert result.shape == [sum(result.shape), 0, 0] and result.shape[0] > 0
    assert result.texture[0] == 0 and sum(result.texture) > 0


def test_shapes_stimuli_need_a_network_of_the_shapes_classes():
    network = _network(_Constant(10, 0), [str(i) for i in range(10)], size=32)
    with pytest.raises(ValueError, match="trained on the shapes classes"):
        measure_shape_bias(network, "shapes", count=10)


# -- the 16 ImageNet categories ---------------------------------------------------------------------------------------


def test_the_16_categories_are_the_papers():
    paper = ["airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog", "elephant",
             "keyboard", "knife", "oven", "truck"]  # fmt: skip
    assert list(CATEGORIES) == paper == list(PAPER_INDICES)
    assert {c: list(v) for c, v in IMAGENET_INDICES.items()} == PAPER_INDICES
    every = [i for v in IMAGENET_INDICES.values() for i in v]
    assert len(every) == len(set(every)) and all(0 <= i < 1000 for i in every)


def test_category_probability_is_the_mean_over_its_imagenet_classes():
    p = torch.zeros(2, 1000)
    p[0, 404] = 0.4  # airplane: one class
    p[0, [294, 295, 296, 297]] = torch.tensor([0.1, 0.2, 0.3, 0.0])  # bear: mean 0.15
    p[1, 152] = 0.5  # one dog class: the dog category gets 0.5 / 109 ...
    p[1, 499] = 0.2  # ... and knife (one class) 0.2: the mean decides knife where a sum would decide dog
    q = category_probabilities(p)
    assert q.shape == (2, 16)
    assert q[0, CATEGORIES.index("airplane")] == pytest.approx(0.4)
    assert q[0, CATEGORIES.index("bear")] == pytest.approx(0.15)
    assert q[1, CATEGORIES.index("dog")] == pytest.approx(0.5 / len(PAPER_INDICES["dog"]))
    assert CATEGORIES[int(q[1].argmax())] == "knife"
    with pytest.raises(ValueError, match="1000 classes"):
        category_probabilities(torch.zeros(1, 10))


def test_stimulus_names_carry_shape_then_texture():
    assert parse_stimulus_name("airplane1-bicycle2.png") == ("airplane", "bicycle")
    assert parse_stimulus_name(Path("cat/cat10-elephant3.JPG")) == ("cat", "elephant")
    for name in ("cat.png", "airplane1.png", "image_0001.png", "airplane-bicycle.png"):
        with pytest.raises(ValueError, match="named <shape><n>-<texture><m>"):
            parse_stimulus_name(name)
    with pytest.raises(ValueError, match="'zebra' is not one of the 16"):
        parse_stimulus_name("zebra1-cat2.png")


def test_find_stimuli_reads_every_class_folder(tmp_path):
    _stimuli(tmp_path, ["airplane/airplane1-bicycle2.png", "bear/bear3-cat1.png"])
    found = find_stimuli(tmp_path)
    assert [(p.name, s, t) for p, s, t in found] == [
        ("airplane1-bicycle2.png", "airplane", "bicycle"),
        ("bear3-cat1.png", "bear", "cat"),
    ]
    _stimuli(tmp_path, ["bear/photo.png"])
    with pytest.raises(ValueError, match="must carry shape and texture: photo.png"):
        find_stimuli(tmp_path)
    with pytest.raises(ValueError, match="holds no images"):
        find_stimuli(_stimuli(tmp_path / "empty", []))
    with pytest.raises(FileNotFoundError):
        find_stimuli(tmp_path / "missing")


def test_folder_of_stimuli_scored_over_the_16_categories(tmp_path):
    # The network reads the ImageNet class to favour from the red value of the (uniform) stimulus.
    wanted = {
        "airplane/airplane1-bicycle2.png": 404,  # airplane: the shape
        "bear/bear1-cat1.png": 281,  # cat: the texture
        "dog/dog1-knife1.png": 766,  # oven: neither
        "car/car1-car2.png": 436,  # one category for both cues: dropped
    }
    codes = {index: code for code, index in enumerate(sorted(set(wanted.values())), start=1)}
    folder = _stimuli(tmp_path, list(wanted), red={name: codes[i] * 40 for name, i in wanted.items()})
    network = _network(_RedToClass({code * 40: index for index, code in codes.items()}), _numbers(1000), size=16)
    result = measure_shape_bias(network, folder)
    assert result.categories == list(CATEGORIES) and result.dropped == 1 and result.count == 3
    at = CATEGORIES.index
    assert result.shape[at("airplane")] == 1 and result.texture[at("bear")] == 1 and result.other[at("dog")] == 1
    assert result.overall == pytest.approx(0.5)


def test_folder_of_stimuli_needs_imagenet_classes(tmp_path):
    folder = _stimuli(tmp_path, ["cat/cat1-dog2.png"])
    with pytest.raises(ValueError, match="ImageNet's 1000 classes; .* has 10"):
        measure_shape_bias(_network(_Constant(10, 0), _numbers(10), size=16), folder)
    names = [f"thing {i}" for i in range(1000)]
    with pytest.raises(ValueError, match="1000 classes, but not ImageNet's"):
        measure_shape_bias(_network(_Constant(1000, 0), names, size=16), folder)


# -- the report and the command ---------------------------------------------------------------------------------------


def test_report_writes_chart_and_tables(tmp_path):
    result = ShapeBias(["a", "b"], shape=[3, 0], texture=[1, 0], other=[2, 0], dropped=1, model="m", stimuli="s")
    paths = write_shape_bias_report(result, tmp_path / "report")
    assert paths.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["category"] for r in rows] == ["a", "b", "all"]
    assert float(rows[0]["shape bias"]) == pytest.approx(0.75) and rows[1]["shape bias"] == ""
    text = paths.markdown.read_text()
    assert "shape bias: 0.750" in text and "| all | 3 | 1 | 2 | 0.750 |" in text and "1 dropped" in text


def test_cli_measures_a_checkpoint_on_generated_stimuli(trained, tmp_path, capsys):
    out = tmp_path / "bias"
    code = main(["texture-bias", str(trained["shape"]), "--stimuli", "shapes", "--out", str(out), "--count", "300"])
    assert code == 0
    printed = capsys.readouterr().out
    overall = float(printed.split("shape bias: ")[1].split()[0])
    assert overall > 0.7 and "over 300 stimuli" in printed
    assert (out / "shape_bias.png").stat().st_size > 0
    assert f"{overall:.3f}" in (out / "shape_bias.md").read_text()
    assert len((out / "shape_bias.csv").read_text().splitlines()) == 1 + len(SHAPES) + 1


def test_cli_measures_an_imagenet_model_on_a_folder(tmp_path, capsys):
    import convzoo

    weights = tmp_path / "mobilenet.pth"
    torch.save(convzoo.create_model("mobilenet_v1_025").state_dict(), weights)
    folder = _stimuli(tmp_path / "stimuli", ["airplane/airplane1-bicycle2.png", "cat/cat1-cat2.png"])
    args = ["texture-bias", "mobilenet_v1_025", "--weights", str(weights), "--stimuli", str(folder)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "1 dropped" in capsys.readouterr().out
    rows = (tmp_path / "out" / "shape_bias.csv").read_text().splitlines()
    assert len(rows) == 1 + 16 + 1 and rows[-1].startswith("all,")


def test_cli_errors(trained, tmp_path, capsys):
    unlabeled = _stimuli(tmp_path / "unlabeled", ["cat/IMG_0001.png"])
    assert main(["texture-bias", str(trained["shape"]), "--stimuli", str(unlabeled), "--out", str(tmp_path)]) == 2
    assert "must carry shape and texture: IMG_0001.png" in capsys.readouterr().err

    labeled = _stimuli(tmp_path / "labeled", ["cat/cat1-dog2.png"])
    assert main(["texture-bias", str(trained["shape"]), "--stimuli", str(labeled), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convzoo: error:") and "need a network with ImageNet's 1000 classes" in err
    assert not (tmp_path / "shape_bias.png").exists()


# -- helpers --------------------------------------------------------------------------------------------------------


class _Constant(nn.Module):
    """Always decides ``index``."""

    def __init__(self, num_classes: int, index: int) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the network a device
        self.num_classes, self.index = num_classes, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes)
        logits[:, self.index] = 10.0
        return logits


class _RedToClass(nn.Module):
    """1000 logits that favour the ImageNet class coded by the image's red value (uniform images)."""

    def __init__(self, codes: dict[int, int]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.codes = codes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0].mean((1, 2)) * 255).round().int()  # the network below does not normalise
        logits = torch.zeros(x.shape[0], 1000)
        for row, value in enumerate(red.tolist()):
            logits[row, self.codes[value]] = 50.0
        return logits


def _network(model: nn.Module, classes: list[str], *, size: int) -> Network:
    plain = Preprocessing(crop_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Network(model.eval(), "test network", "test", classes, plain)


def _numbers(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _stimuli(root: Path, names: list[str], *, red: dict[str, int] | None = None) -> Path:
    """Uniform 16x16 images at ``root/name`` (red value from ``red``, else 128)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = ((red or {}).get(name, 128), 90, 60)
        Image.new("RGB", (16, 16), colour).save(path)
    return root
