"""torch.compile and torch.export for every registered model: forward, training step and intermediate feature maps.

The zoo-wide checks compile with ``backend="aot_eager"``: graph capture (Dynamo) and the autograd graph (AOTAutograd)
are what a model can break; Inductor's code generation is not model-specific and costs tens of seconds per model on
a CPU, so a few models check it. The default run covers one small member of every family file; the slow run, the zoo.
"""

import pytest
import torch
import torch.nn as nn
from test_interface import ALL_MODELS, OVERFLOW_FLOAT32, calibrate_norms

import convzoo
from convzoo.models.base import AuxOutputs, ConvNet, FeatureExtractor, classification_loss
from convzoo.models.fractalnet import FractalNet, sample_join_keep

# One small member of every family file for the default run, with overrides that shrink the costliest (wide fully
# connected heads, deep stacks) while keeping every layer type; the slow run checks every registered model as built.
FAMILY_SAMPLES: dict[str, dict[str, object]] = {
    "alexnet": {"hidden": (64, 64)},
    "bagnet9": {"layers": (1, 1, 1, 1)},
    "densenet_40_12": {"block_config": (2, 2, 2)},
    # Two narrow columns; without dropout and drop-path the compiled draws (`sample_join_keep`) and the eager ones
    # give one result.
    "fractalnet_20": {
        "columns": 2,
        "channels": (8,) * 5,
        "drop_rates": (0.0,) * 5,
        "local_drop_rate": 0.0,
        "global_drop_ratio": 0.0,
    },
    "googlenet": {},
    "highway_cifar_19": {},
    "inception_v3": {"aux_logits": False},
    "lenet5": {},
    "mobilenet_v1_025": {},
    "nasnet_a_mobile": {"cells_per_stack": 1, "drop_path_rate": 0.3},
    "nin": {},
    "resnet20": {},
    "squeezenet1_1": {},
    "vgg11": {"hidden": (64, 64)},
}
# The default run compiles every sample's forward, and the training step of those that cover what a training graph
# adds: plain, auxiliary outputs (GoogLeNet), drop-path drawn in the graph (FractalNet). The slow run: all of them.
TRAIN_SAMPLES = ["resnet20", "squeezenet1_1", "googlenet", "fractalnet_20"]
# It also compiles and exports the feature maps of a trunk of plain children and of one that opens sequences (nin's
# features.N); the slow run, of every model (NASNet's and FractalNet's trunks are their own).
INTERMEDIATE_SAMPLES = ["resnet20", "nin"]


def zoo(default: list[str]) -> list:
    """(name, overrides): the ``default`` samples; each family's sample as built in the slow run; every other
    registered model in the zoo run (``make test-zoo``)."""
    params = [pytest.param(name, FAMILY_SAMPLES[name], id=f"{name}-sample") for name in default]
    for name in ALL_MODELS:
        if name not in default or FAMILY_SAMPLES[name]:
            mark = pytest.mark.slow if name in FAMILY_SAMPLES else pytest.mark.zoo
            params.append(pytest.param(name, {}, id=name, marks=mark))
    return params


def build(name: str, overrides: dict[str, object], **kwargs: object) -> ConvNet:
    torch.manual_seed(0)
    model = convzoo.create_model(name, num_classes=7, **overrides, **kwargs)
    return model.double() if name in OVERFLOW_FLOAT32 else model


def smallest_batch(model: ConvNet) -> torch.Tensor:
    """Two images of the smallest size the model accepts (twice that below 16 pixels: at 9x9 BagNet-9's last
    batch norms see one value per image, and their calibrated statistics overflow float32)."""
    dtype = next(model.parameters()).dtype
    size = model.min_input_size if model.min_input_size >= 16 else 2 * model.min_input_size
    return torch.randn(2, model.in_chans, size, size, dtype=dtype, generator=torch.Generator().manual_seed(3))


def assert_close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol / 10 * scale)


def outputs(out: torch.Tensor | AuxOutputs) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [out.logits, *out.aux_logits]


def train_step(model: nn.Module, step, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and parameter gradients of one forward-loss-backward ``step``; every run draws the same masks."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out, loss = step(x, torch.tensor([1, 4]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return [t.detach() for t in outputs(out)], grads


def check_forward(model: ConvNet, x: torch.Tensor, backend: str, rtol: float = 1e-4) -> None:
    """Whole-graph compilation gives eager's outputs in evaluation mode."""
    torch._dynamo.reset()
    calibrate_norms(model, x)
    model.eval()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        assert_close(compiled(x), model(x), rtol)


def check_training_step(model: ConvNet, x: torch.Tensor, backend: str, rtol: float = 1e-4) -> None:
    """A compiled forward and loss, then backward, gives eager's outputs and finite gradients equal to eager's."""
    torch._dynamo.reset()

    def step(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor | AuxOutputs, torch.Tensor]:
        out = model(x)
        return out, classification_loss(out, target)

    model.train()
    expected, expected_grads = train_step(model, step, x)
    got, grads = train_step(model, torch.compile(step, fullgraph=True, backend=backend), x)
    assert len(got) == len(expected) and len(grads) == len(expected_grads)
    for a, b in zip([*got, *grads], [*expected, *expected_grads]):
        assert_close(a, b, rtol)


@pytest.mark.parametrize(("name", "overrides"), zoo(list(FAMILY_SAMPLES)))
def test_forward_compiles_fullgraph(name, overrides):
    model = build(name, overrides)
    check_forward(model, smallest_batch(model), backend="aot_eager")


@pytest.mark.parametrize(("name", "overrides"), zoo(TRAIN_SAMPLES))
def test_training_step_compiles_fullgraph(name, overrides):
    if name == "fractalnet_20" and not overrides:
        # Drawn drop-path takes other random draws compiled than eagerly; with a fixed column both take the same.
        overrides = {"column": 3}
    model = build(name, overrides)
    check_training_step(model, smallest_batch(model), backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenet_v1_025"])
def test_inductor(name):
    # In float64: in float32 the rounding differences of inductor's fused kernels are amplified by the batch norms of
    # the last stages, which see two values per channel at this size, until gradients differ by several percent.
    # Inductor also draws dropout masks with its own generator, so the training step is compared without dropout.
    model = build(name, {}).double()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    x = smallest_batch(model)
    check_forward(model, x, backend="inductor", rtol=1e-6)
    check_training_step(model, x, backend="inductor", rtol=1e-6)


@pytest.mark.parametrize(("name", "overrides"), zoo(INTERMEDIATE_SAMPLES))
def test_intermediates_and_features_only_compile_and_export(name, overrides):
    torch._dynamo.reset()
    model = build(name, overrides)
    x = smallest_batch(model)
    calibrate_norms(model, x)
    model.eval()
    compiled = torch.compile(model.forward_intermediates, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = model.forward_intermediates(x)
        got = compiled(x)
        assert len(got) == len(expected) == len(model.feature_info)
        for a, b in zip(got, expected):
            assert_close(a, b)
        exported = torch.export.export(model, (x,)).module()
        assert_close(exported(x), model(x))

    # An early tap stops the trunk there, compiled and exported alike.
    extractor = FeatureExtractor(model, out_indices=(0, -2)).eval()
    with torch.no_grad():
        expected = extractor(x)
        compiled = torch.compile(extractor, fullgraph=True, backend="aot_eager")
        exported = torch.export.export(extractor, (x,)).module()
        for result in (compiled(x), exported(x)):
            assert len(result) == 2
            for a, b in zip(result, expected):
                assert_close(a, b)


def test_exported_features_take_other_batch_sizes():
    model = build("resnet20", {}, features_only=True, out_indices=(1, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},)).module()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(exported(x), model(x)):
            torch.testing.assert_close(a, b)


def test_fractalnet_drop_path_draws_compile():
    """Training with drawn drop-path (global or local, per batch) compiles whole, with finite gradients."""
    torch._dynamo.reset()
    model = build("fractalnet_20", {"columns": 2, "channels": (8,) * 5}).train()
    assert isinstance(model, FractalNet) and model.column is None
    x = smallest_batch(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    losses = set()
    for seed in range(3):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        loss = classification_loss(compiled(x), torch.tensor([1, 4]))
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        losses.add(round(loss.item(), 6))
    assert len(losses) > 1  # the draws differ from batch to batch


def test_compiled_join_draws_follow_drop_path():
    """`sample_join_keep`, the draw compiled training uses, follows the eager draws' rules and distribution."""
    torch.manual_seed(0)
    local, dropped = torch.tensor(0), []
    for _ in range(2000):
        keep = sample_join_keep((0, 1, 2), local, 0.15)
        assert keep.dtype == torch.bool and keep.any()
        dropped.append((~keep).float().mean().item())
    assert abs(sum(dropped) / len(dropped) - 0.15) < 0.02
    assert all(sample_join_keep((0, 1, 2), local, 1.0).sum() == 1 for _ in range(50))
    # Global drop-path: only the chosen column passes, and a join it does not reach averages its inputs.
    assert sample_join_keep((1, 2), torch.tensor(3), 0.15).tolist() == [False, True]
    assert sample_join_keep((1, 2), torch.tensor(1), 0.15).tolist() == [True, True]
