"""Names, cards, keywords: the registry's promises."""

import pytest
import torch
import torch.nn as nn

import convzoo
from convzoo.registry import ModelCard, Paper, get_model_card, list_models, register_model


def test_list_models_patterns():
    names = convzoo.list_models("resnet*")
    assert names[:6] == ["resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50"]
    assert "resnext50_32x4d" not in names
    assert convzoo.list_models(["wrn*", "wide_*"]) == [
        "wide_resnet50_2",
        "wide_resnet101_2",
        "wrn16_8",
        "wrn28_10",
        "wrn40_1",
        "wrn40_2",
        "wrn40_4",
    ]
    resnets = convzoo.list_models(family="resnet")
    assert "resnet50" in resnets and "wrn28_10" in resnets
    assert all(convzoo.get_model_card(n).family == "resnet" for n in resnets)
    assert convzoo.list_models("nothing*") == []


def test_every_named_network_of_the_residual_family_is_registered():
    expected = (
        [f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110, 1202)]
        + [f"plain{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110, 1202)]
        + [f"preact_resnet{d}" for d in (18, 34, 50, 101, 152, 110, 164, 1001)]
        + ["wrn16_8", "wrn28_10", "wrn40_1", "wrn40_2", "wrn40_4", "wide_resnet50_2", "wide_resnet101_2"]
        + ["resnext50_32x4d", "resnext101_32x4d", "resnext101_32x8d", "resnext101_64x4d"]
        + ["resnext29_8x64d", "resnext29_16x64d"]
        + [f"se_resnet{d}" for d in (18, 34, 50, 101, 152)]
        + ["se_resnext50_32x4d", "se_resnext101_32x4d"]
    )
    assert set(expected) <= set(convzoo.list_models())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="unknown model name 'resnet51'; did you mean .*resnet50"):
        convzoo.create_model("resnet51")
    with pytest.raises(KeyError, match="unknown model name 'zzz'; see convzoo.list_models"):
        convzoo.get_model_card("zzz")


def test_unknown_keyword_names_model_and_accepted_keys():
    with pytest.raises(TypeError) as info:
        convzoo.create_model("resnet50", grops=32)
    message = str(info.value)
    assert "resnet50 got unexpected keyword argument(s) 'grops' (did you mean 'groups'?)" in message
    assert "accepted keys:" in message and "zero_init_residual" in message and "depth" in message


def test_bad_common_arguments():
    with pytest.raises(ValueError, match="num_classes must be a non-negative int"):
        convzoo.create_model("resnet20", num_classes=-1)
    with pytest.raises(ValueError, match="in_chans must be a positive int"):
        convzoo.create_model("resnet20", in_chans=0)
    with pytest.raises(TypeError, match="out_indices only applies with features_only=True"):
        convzoo.create_model("resnet20", out_indices=(1, 2))
    with pytest.raises(ValueError, match="feature index 9 is out of range"):
        convzoo.create_model("resnet20", features_only=True, out_indices=(9,))


def test_duplicate_registration_raises():
    card = convzoo.get_model_card("resnet50")
    with pytest.raises(ValueError, match="'resnet50' is already registered"):
        register_model(card, lambda **kw: nn.Identity())


def test_default_classes_follow_the_card():
    assert convzoo.create_model("resnet20").fc.out_features == 10
    assert convzoo.create_model("resnet18").fc.out_features == 1000
    assert convzoo.create_model("resnet20", num_classes=0).forward_head.__self__.num_classes == 0


def test_card_contents():
    card = convzoo.get_model_card("resnet110")
    assert isinstance(card, ModelCard) and isinstance(card.paper, Paper)
    assert card.paper.year == 2016 and card.paper.venue == "CVPR"
    assert card.input_size == (3, 32, 32) and card.num_classes == 10
    assert card.reported[0].value == 6.43 and card.reported[0].source == "Table 6"
    assert card.top1_accuracy() == pytest.approx(93.57)
    assert convzoo.get_model_card("resnet50").top1_accuracy() == pytest.approx(77.15)
    assert "Table 4" in str(convzoo.get_model_card("resnext101_64x4d").reported[0])


@pytest.mark.parametrize("name", convzoo.list_models())
def test_reset_classifier_rejects_a_bad_class_count(name):
    with torch.device("meta"):  # the check, not the weights, is under test
        model = convzoo.create_model(name)
    for bad in (-2, 2.5, "10", True):
        with pytest.raises(ValueError, match=rf"^{name}: num_classes must be a non-negative int; got {bad!r}$"):
            model.reset_classifier(bad)
    assert model.num_classes == convzoo.get_model_card(name).num_classes


def test_cards_name_their_task_and_list_models_filters_by_it():
    from convzoo.registry import TASKS
    from convzoo.train.tasks import ClassificationTask, register_task, task_for

    assert set(list_models()) <= set(list_models(task=None))
    assert all(get_model_card(n).task == "classification" for n in list_models())
    for task in TASKS[1:]:
        assert set(list_models(task=task)).isdisjoint(list_models())
    with pytest.raises(ValueError, match="task must be one of"):
        list_models(task="captioning")
    with pytest.raises(ValueError, match="task must be one of"):
        ModelCard("x", "f", Paper("a", "t", 2000, "v"), (3, 8, 8), 2, (0.5,), (0.5,), task="captioning")
    assert isinstance(task_for("resnet20", label_smoothing=0.1), ClassificationTask)
    with pytest.raises(ValueError, match="already registered"):
        register_task("classification", ClassificationTask)


def test_features_only_names_what_it_applies_to():
    name = list_models(task="segmentation")[0]
    with pytest.raises(TypeError, match="segmentation network; features_only=True applies to the classifiers"):
        convzoo.create_model(name, features_only=True)
