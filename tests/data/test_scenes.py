"""The scenes data set and the augmentation that moves masks and boxes with their images."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from convzoo.data import SCENE_CLASSES, Augment, FastLoader, load_dataset, make_scenes
from convzoo.data.shapes import _boxes_from_masks
from convzoo.data.transforms import IGNORE_INDEX

TARGETS = ("masks", "boxes", "box_labels", "instance_masks")


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(96, image_size=48, seed=2)


def test_scenes_hold_consistent_masks_boxes_and_labels(scenes):
    n, k = len(scenes), 4
    assert scenes.classes == list(SCENE_CLASSES) and scenes.image_size == (3, 48, 48)
    masks, boxes, labels, inst = (scenes.extras[t] for t in TARGETS)
    assert masks.shape == (n, 48, 48) and boxes.shape == (n, k, 4) and inst.shape == (n, k, 48, 48)
    present = labels >= 0
    # Objects first, padding after; padding rows are empty.
    assert torch.equal(present, present.sort(dim=1, descending=True, stable=True).values)
    assert not inst[~present].any() and not boxes[~present].any()
    # Every box is its instance mask's tight box, instances never overlap, the class map is their union.
    assert torch.equal(_boxes_from_masks(inst[present]), boxes[present])
    assert inst.sum(1).max() <= 1
    assert torch.equal((inst * labels.clamp(min=0)[..., None, None]).sum(1).to(torch.uint8), masks)
    # The label is the largest object's class, 0 for an empty image; the counts vary, some images are empty.
    counts = present.sum(1)
    assert counts.max() >= 3 and counts.min() <= 1
    largest = labels.gather(1, inst.sum((2, 3)).argmax(1, keepdim=True))[:, 0]
    assert torch.equal(scenes.labels, torch.where(counts > 0, largest, 0))
    assert set(labels[present].unique().tolist()) <= set(range(1, 7))


def test_scenes_are_reproducible_and_split_by_stream():
    a, b = make_scenes(8, seed=1), make_scenes(8, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.extras["boxes"], b.extras["boxes"])
    assert not torch.equal(a.images, make_scenes(8, seed=1, split="test").images)
    assert (make_scenes(30, fill=0.0).extras["box_labels"] == -1).all()
    with pytest.raises(ValueError, match="at least 32"):
        make_scenes(2, image_size=16)
    with pytest.raises(ValueError, match="fill"):
        make_scenes(2, fill=1.5)


def test_load_dataset_draws_scenes_at_the_requested_size():
    train, test = load_dataset("scenes", n_train=12, n_test=6, image_size=40)
    assert len(train) == 12 and len(test) == 6 and train.image_size == (3, 40, 40)
    assert train.extras["masks"].shape == (12, 40, 40)


def test_crops_and_flips_move_masks_and_boxes_with_their_images(scenes):
    targets = {t: scenes.extras[t] for t in TARGETS}
    marked = scenes.images.clone()
    marked[:, 0] = targets["masks"] * 30  # a channel that shows the class map
    x, moved = Augment(crop=48, padding=6, flip=True)(marked, torch.Generator().manual_seed(0), targets)
    seen = (x[:, 0] * 255).round().long()
    inside = moved["masks"] != IGNORE_INDEX
    assert torch.equal(seen[inside], moved["masks"][inside].long() * 30)
    assert (seen[~inside] == 0).all() and (~inside).any()  # zero padding is ignored in the class map
    assert torch.equal(
        moved["masks"][inside],
        (moved["instance_masks"] * moved["box_labels"].clamp(min=0)[..., None, None]).sum(1).to(torch.uint8)[inside],
    )
    # Clipped boxes contain their visible masks; boxes cut off entirely became padding rows.
    kept = moved["box_labels"] >= 0
    visible = moved["instance_masks"].any((2, 3))
    assert not (visible & ~kept).any()
    tight = _boxes_from_masks(moved["instance_masks"][kept & visible])
    b = moved["boxes"][kept & visible]
    assert (b[:, :2] <= tight[:, :2]).all() and (b[:, 2:] >= tight[:, 2:]).all()
    assert not moved["boxes"][~kept].any()


def test_a_flip_agrees_with_torchvision_on_masks_and_boxes(scenes):
    images, masks, boxes = scenes.images[:6], scenes.extras["masks"][:6], scenes.extras["boxes"][:6]
    labels = scenes.extras["box_labels"][:6]
    flip = v2.RandomHorizontalFlip(p=1.0)
    always = Augment(flip=True)
    # Find a seed that flips every image, then compare with torchvision's flip of the same targets.
    gen = next(
        torch.Generator().manual_seed(s)
        for s in range(10_000)
        if (torch.rand(6, generator=torch.Generator().manual_seed(s)) < 0.5).all()
    )
    x, moved = always(images, gen, {"masks": masks, "boxes": boxes, "box_labels": labels})
    for i in range(6):
        img, mask, box = flip(
            tv_tensors.Image(images[i]),
            tv_tensors.Mask(masks[i]),
            tv_tensors.BoundingBoxes(boxes[i], format="XYXY", canvas_size=(48, 48)),
        )
        assert torch.equal((x[i] * 255).round().to(torch.uint8), img)
        assert torch.equal(moved["masks"][i], mask)
        keep = labels[i] >= 0
        assert torch.allclose(moved["boxes"][i][keep], box[keep])


def test_resizing_scales_boxes_and_resamples_masks(scenes):
    targets = {t: scenes.extras[t][:4] for t in ("masks", "boxes", "box_labels")}
    x, moved = Augment(out_size=96)(scenes.images[:4], None, targets)
    assert x.shape[-1] == 96 and moved["masks"].shape == (4, 96, 96)
    assert torch.equal(moved["boxes"], targets["boxes"] * 2)
    assert torch.equal(moved["masks"][:, ::2, ::2], targets["masks"])


def test_bad_targets_are_named(scenes):
    with pytest.raises(ValueError, match="they must match"):
        Augment(flip=True)(scenes.images[:2], None, {"masks": torch.zeros(2, 10, 10, dtype=torch.uint8)})
    with pytest.raises(KeyError, match="box_labels go with boxes"):
        Augment(flip=True)(scenes.images[:2], None, {"box_labels": scenes.extras["box_labels"][:2]})
    with pytest.raises(ValueError, match="random resized crop"):
        Augment(random_resized_crop=(0.5, 1.0), out_size=48)(
            scenes.images[:2], None, {"masks": scenes.extras["masks"][:2]}
        )


def test_the_loader_moves_the_extras_it_yields(scenes):
    loader = FastLoader(
        scenes, batch_size=32, shuffle=True, augment=Augment(crop=48, padding=4, flip=True), extras=("masks", "boxes")
    )
    x, y, masks, boxes = next(iter(loader))
    assert x.shape == (32, 3, 48, 48) and masks.shape == (32, 48, 48) and boxes.shape == (32, 4, 4)
    assert (masks == IGNORE_INDEX).any()  # the crop's padding reached the masks
