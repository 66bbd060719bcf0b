"""Named recipes and learning-rate schedules."""

import math

import pytest

from convzoo.train import RECIPES, LearningRate, get_recipe


def test_every_recipe_states_its_source_and_is_valid():
    assert {"alexnet", "vgg", "resnet-imagenet", "resnet-cifar", "densenet-cifar", "wrn-cifar", "modern"} <= set(
        RECIPES
    )
    for recipe in RECIPES.values():
        recipe.validate()
        assert len(recipe.source) > 40


def test_resnet_cifar_is_he_et_al_section_4_2():
    r = get_recipe("resnet-cifar")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size, r.iterations) == (0.1, 0.9, 1e-4, 128, 64_000)
    assert r.crop_padding == 4 and r.flip
    schedule = LearningRate(r, r.lr, r.iterations, 391)
    assert schedule(0) == 0.1 and schedule(31_999) == 0.1
    assert schedule(32_000) == pytest.approx(0.01) and schedule(47_999) == pytest.approx(0.01)
    assert schedule(48_000) == pytest.approx(0.001) and schedule(63_999) == pytest.approx(0.001)


def test_resnet_110_warm_up_at_a_constant_rate():
    r = get_recipe("resnet-cifar").replace(warmup_epochs=1, warmup_lr=0.01)
    schedule = LearningRate(r, r.lr, 64_000, 400)
    assert schedule(0) == schedule(399) == 0.01 and schedule(400) == 0.1


def test_cosine_with_linear_warm_up():
    r = get_recipe("modern")
    schedule = LearningRate(r, 0.1, 1000, 10)  # 5 warm-up epochs = 50 steps
    assert schedule(0) == pytest.approx(0.1 / 50) and schedule(49) == pytest.approx(0.1)
    assert schedule(50) == pytest.approx(0.1)
    assert schedule(525) == pytest.approx(0.05)
    assert schedule(1000) == pytest.approx(0.0, abs=1e-12)


def test_step_and_plateau_schedules():
    r = get_recipe("resnet-imagenet")
    schedule = LearningRate(r, 0.1, 90 * 100, 100)
    assert schedule(2999) == 0.1 and schedule(3000) == pytest.approx(0.01) and schedule(6000) == pytest.approx(0.001)
    plateau = LearningRate(get_recipe("alexnet"), 0.01, 1000, 10)
    for accuracy in [50, 60, 61] + [61] * 6:
        plateau.end_of_epoch(accuracy)
    assert plateau(500) == pytest.approx(0.001)
    restored = LearningRate(get_recipe("alexnet"), 0.01, 1000, 10)
    restored.load_state_dict(plateau.state_dict())
    assert restored(500) == plateau(500) and restored.best == 61


def test_overrides_are_checked():
    r = get_recipe("resnet-cifar").replace(epochs=3, iterations=None, milestones=[0.4])
    assert r.epochs == 3 and r.milestones == (0.4,)
    with pytest.raises(TypeError, match="unknown recipe setting.*'lernrate'"):
        get_recipe("vgg").replace(lernrate=0.1)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        get_recipe("vgg").replace(schedule="linear")
    with pytest.raises(KeyError, match="unknown recipe 'resnet_cifar'; did you mean resnet-cifar"):
        get_recipe("resnet_cifar")
    assert math.isclose(get_recipe("modern").lr, 0.1)
