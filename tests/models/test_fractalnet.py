"""FractalNet: the expansion rule (columns, depths, joins), the mean join, local and global drop-path, single-column
evaluation, the parameter count of the paper's layout and golden outputs."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.models import fractalnet as fractal
from convzoo.models.fractalnet import ConvUnit, expansion_joins, fractal_join, sample_local_keep

SMALL = {"channels": (4, 6, 8, 8, 8)}  # the paper's layout with few filters, for fast behavioural tests


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return convzoo.count_params(convzoo.create_model(name, **kwargs))


def reference_count(channels, columns: int, classes: int, in_chans: int = 3) -> int:
    """Each block has 2^C - 1 3x3 convolutions with biases, the first of each of the C columns reading the block's
    input; batch norm has no affine parameters (Caffe's BatchNorm without Scale); one fully connected layer."""
    total, chs = 0, in_chans
    for out in channels:
        total += columns * (chs * out * 9 + out) + (2**columns - 1 - columns) * (out * out * 9 + out)
        chs = out
    return total + chs * classes + classes


def test_parameter_count_of_the_papers_layout():
    assert n_params("fractalnet_20") == reference_count((64, 128, 256, 512, 512), 3, 10) == 33_714_314
    assert n_params("fractalnet_20", num_classes=100) == reference_count((64, 128, 256, 512, 512), 3, 100)
    assert n_params("fractalnet_20", columns=4, **SMALL) == reference_count(SMALL["channels"], 4, 10)
    with torch.device("meta"):
        model = convzoo.create_model("fractalnet_20")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 5 * 7 and not any(m.affine for m in norms)


def test_expansion_rule_by_hand():
    # f_1 = conv; f_2 = join(conv o conv, conv); f_3 = join(f_2 o f_2, conv): joins after levels 2 and 4.
    assert expansion_joins(1) == [1]
    assert expansion_joins(2) == [1, 2]
    assert expansion_joins(3) == [1, 2, 1, 3]
    assert expansion_joins(4) == [1, 2, 1, 3, 1, 2, 1, 4]


@pytest.mark.parametrize("columns", [1, 2, 3, 4, 5])
def test_columns_and_depths_follow_the_expansion_rule(columns):
    with torch.device("meta"):
        model = convzoo.create_model("fractalnet_20", columns=columns, **SMALL)
    for block in model.blocks():
        # Column c holds 2^(c-1) convolutions; the block 2^C - 1; the joins are those of f_C.
        assert [len(col) for col in block.columns] == [2 ** (c - 1) for c in range(1, columns + 1)]
        assert {type(unit) for col in block.columns for unit in col} == {ConvUnit}
        assert sum(len(col) for col in block.columns) == 2**columns - 1
        assert [len(active) for active in block.schedule] == expansion_joins(columns)
        # Every column takes part in the final join, and each of its convolutions runs at one level.
        assert block.schedule[-1] == tuple(range(columns))
        assert [sum(c in active for active in block.schedule) for c in range(columns)] == [
            2 ** (c - 1) for c in range(1, columns + 1)
        ]
    # The deepest column of B = 5 blocks: 20 convolutions for C = 3 (fractalnet_20), 40 for C = 4.
    assert 5 * len(model.block1.columns[-1]) == 5 * 2 ** (columns - 1)


def test_join_is_the_mean_of_the_active_inputs():
    inputs = [torch.randn(2, 3, 4, 4) for _ in range(4)]
    torch.testing.assert_close(fractal_join(inputs), (inputs[0] + inputs[1] + inputs[2] + inputs[3]) / 4)
    torch.testing.assert_close(fractal_join(inputs, [True, False, True, False]), (inputs[0] + inputs[2]) / 2)
    assert torch.equal(fractal_join(inputs, [False, False, True, False]), inputs[2])
    # A dropped input still belongs to the graph, with a zero gradient.
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    fractal_join(leaves, [True, False, True, True]).sum().backward()
    assert torch.equal(leaves[1].grad, torch.zeros_like(leaves[1]))
    torch.testing.assert_close(leaves[0].grad, torch.full_like(leaves[0], 1 / 3))


def test_local_drop_path_keeps_at_least_one_input():
    torch.manual_seed(0)
    for n in (2, 3, 4):
        assert all(sum(sample_local_keep(n, 1.0)) == 1 for _ in range(200))
        assert all(sample_local_keep(n, 0.0) == [True] * n for _ in range(20))
    draws = [sample_local_keep(3, 0.15) for _ in range(4000)]
    assert all(any(keep) for keep in draws)
    dropped = sum(not k for keep in draws for k in keep) / (3 * 4000)
    assert abs(dropped - 0.15) < 0.02


def test_every_multi_input_join_samples_local_drop_path_in_training(monkeypatch):
    calls = []

    def recording(num_inputs, drop_rate):
        calls.append((num_inputs, drop_rate))
        return sample_local_keep(num_inputs, drop_rate)

    monkeypatch.setattr(fractal, "sample_local_keep", recording)
    model = convzoo.create_model("fractalnet_20", global_drop_ratio=0.0, **SMALL)
    x = torch.randn(2, 3, 32, 32)
    model.eval()(x)
    assert calls == []  # evaluation averages every input
    model.train()(x)
    assert calls == [(2, 0.15), (3, 0.15)] * 5  # per block: the join after level 2, then the final one


def no_dropout_model(**kwargs) -> fractal.FractalNet:
    torch.manual_seed(0)
    return convzoo.create_model("fractalnet_20", drop_rates=(0.0,) * 5, **SMALL, **kwargs)


def randomize_norm_statistics(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("column", [1, 2, 3])
def test_single_column_evaluation_equals_that_column_alone(column):
    model = no_dropout_model()
    x = torch.randn(2, 3, 32, 32)
    randomize_norm_statistics(model)
    model.eval()
    path = nn.Sequential(*[block.column_path(column) for block in model.blocks()])
    with torch.no_grad():
        expected = model.forward_head(path(x))
        model.column = column
        alone = model(x)
        # The same column routed through the whole fractal: every join passes only that column's input.
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        routed = model(x)
    assert torch.equal(alone, expected)
    torch.testing.assert_close(routed, expected, rtol=1e-6, atol=1e-6)
    # Column c alone is a plain network of 5 * 2^(c-1) convolutional units.
    assert sum(isinstance(m, ConvUnit) for m in path.modules()) == 5 * 2 ** (column - 1)


def test_global_drop_path_runs_one_column_for_the_whole_network():
    model = no_dropout_model(global_drop_ratio=1.0, local_drop_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    columns = {}
    with torch.no_grad():
        for c in (1, 2, 3):
            model.column = c
            columns[c] = model(x)
        model.column = None
        chosen = []
        for seed in range(12):
            torch.manual_seed(seed)
            out = model(x)
            matches = [c for c, ref in columns.items() if torch.allclose(out, ref, rtol=1e-6, atol=1e-6)]
            assert len(matches) == 1
            chosen += matches
    assert set(chosen) == {1, 2, 3}


def test_training_without_drop_path_averages_every_join():
    model = no_dropout_model(global_drop_ratio=0.0, local_drop_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        trained = model(x)
        # Evaluation mode with batch statistics: the same computation through the mean joins.
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train()
        averaged = model(x)
    torch.testing.assert_close(trained, averaged, rtol=1e-6, atol=1e-6)


def test_dropout_rates_per_block():
    with torch.device("meta"):
        model = convzoo.create_model("fractalnet_20")
    for block, rate in zip(model.blocks(), (0.0, 0.1, 0.2, 0.3, 0.4)):
        drops = [unit.drop for col in block.columns for unit in col]
        assert drops and {d.p if isinstance(d, nn.Dropout) else 0.0 for d in drops} == {rate}


def test_column_must_exist():
    with pytest.raises(ValueError, match=r"fractalnet_20: column must be None or an integer from 1 .* to 3; got 4"):
        convzoo.create_model("fractalnet_20", column=4, **SMALL)
    model = convzoo.create_model("fractalnet_20", column=3, **SMALL)
    assert model.column == 3
    with pytest.raises(ValueError, match="got 0"):
        model.column = 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"columns": 0}, "a fractal block needs at least one column"),
        ({"drop_rates": (0.0, 0.1)}, "drop_rates has 2 entries but there are 5 blocks"),
        ({"drop_rates": (0.0, 0.1, 0.2, 0.3, 1.0)}, r"drop_rates must lie in \[0, 1\)"),
        ({"local_drop_rate": 1.5}, r"local_drop_rate and global_drop_ratio must lie in \[0, 1\]"),
        ({"channels": (64, 0, 256, 512, 512)}, "every block needs a positive number of filters"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=f"fractalnet_20: {message}"):
        convzoo.create_model("fractalnet_20", **overrides)


def test_card_cites_table_1():
    card = convzoo.get_model_card("fractalnet_20")
    assert card.reported[0].source == "Table 1" and card.top1_accuracy() == pytest.approx(100 - 4.60)
    deepest = [r for r in card.reported if "deepest column" in r.note]
    assert [(r.dataset, r.value) for r in deepest] == [
        ("CIFAR-10", 4.68),
        ("CIFAR-100", 24.32),
        ("CIFAR-10", 7.27),
        ("CIFAR-100", 29.05),
    ]


def test_golden_outputs(golden):
    """No installed library has FractalNet; these outputs pin the implementation down (all columns, then column 3)."""
    name, size = "fractalnet_20", 32
    torch.manual_seed(0)
    model = convzoo.create_model(name).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        torch.manual_seed(2)  # the calibration pass in training mode draws drop-path and dropout
        model.train()(x)
        logits = model.eval()(x)
        model.column = 3
        deepest = model(x)
    golden(name, {"logits": logits, "column3": deepest}, model=name, input=[2, 3, size, size])
