"""Segmentation data on disk: Pascal VOC and image/mask pair folders, written small into a temporary folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.data import load_dataset
from convzoo.data.transforms import IGNORE_INDEX
from convzoo.segmentation.data import (
    VOC_CLASSES,
    VOC_URL,
    is_segmentation_folder,
    load_pairs_folder,
    load_segmentation_folder,
    resize_pair,
)
from convzoo.segmentation.predict import PALETTE


def blocks_mask(h: int, w: int, cls: int) -> np.ndarray:
    """Background with a block of ``cls`` in the upper left and of class 1 in the lower right quarter."""
    m = np.zeros((h, w), np.uint8)
    m[: h // 2, : w // 2] = cls
    m[h * 3 // 4 :, w * 3 // 4 :] = 1
    return m


def write_pair(folder, name: str, mask: np.ndarray, *, size=None, palette: bool = False) -> None:
    h, w = mask.shape
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rgb = np.stack([mask * 40, 255 - mask * 30, np.full_like(mask, 90)], -1).astype(np.uint8)
    Image.fromarray(rgb).resize(size or (w, h)).save(folder / "images" / f"{name}.png")
    image = Image.fromarray(mask, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette(PALETTE.flatten().tolist())
        image.putdata(mask.flatten().tolist())
    image.save(folder / "masks" / f"{name}.png")


@pytest.fixture
def pairs(tmp_path):
    root = tmp_path / "pairs"
    for i in range(10):
        write_pair(root, f"img{i}", blocks_mask(40, 30, 2 + i % 2), palette=i % 2 == 1)
    (root / "classes.txt").write_text("background\nroad\ncar\ntree\n")
    return root


def test_a_pairs_folder_is_read_resized_and_split(pairs):
    assert is_segmentation_folder(pairs) and not is_segmentation_folder(pairs / "images")
    train, test = load_pairs_folder(pairs, image_size=32, test_fraction=0.2)
    assert len(train) == 8 and len(test) == 2
    assert train.classes == ["background", "road", "car", "tree"]
    assert train.images.shape == (8, 3, 32, 32) and train.extras["masks"].shape == (8, 32, 32)
    assert train.extras["masks"].dtype == torch.uint8
    # nearest neighbour: the masks hold only the classes written, and a resized block keeps its share
    assert set(torch.unique(train.extras["masks"]).tolist()) <= {0, 1, 2, 3}
    assert sorted(train.labels.unique().tolist()) == [2, 3]  # the most frequent class other than the background
    m = train.extras["masks"][0].float()
    assert (m > 1).float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_given_splits_and_numbered_classes(tmp_path):
    root = tmp_path / "split"
    for i in range(3):
        write_pair(root / "train", f"a{i}", blocks_mask(16, 16, 4))
    write_pair(root / "val", "b0", blocks_mask(16, 16, 2))
    train, test = load_segmentation_folder(root)
    assert len(train) == 3 and len(test) == 1
    assert train.classes == ["0", "1", "2", "3", "4"]  # no classes.txt: numbered up to the largest value
    assert train.images.shape[-2:] == (16, 16)


def test_masks_that_do_not_fit_are_refused_with_the_file_named(tmp_path):
    root = tmp_path / "bad"
    write_pair(root, "ok", blocks_mask(16, 16, 2))
    write_pair(root, "small", blocks_mask(16, 16, 2), size=(20, 16))
    with pytest.raises(ValueError, match=r"mask .*small\.png is 16x16 but its image .*small\.png is 20x16"):
        load_pairs_folder(root, image_size=16)
    (root / "images" / "small.png").unlink()
    (root / "masks" / "small.png").unlink()
    write_pair(root, "bad", blocks_mask(16, 16, 9))
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    with pytest.raises(ValueError, match=r"bad\.png: class values 9 are out of range; .* 0\.\.2 \(3 classes\)"):
        load_pairs_folder(root)


def test_images_without_masks_and_colour_masks_are_refused(tmp_path):
    root = tmp_path / "missing"
    write_pair(root, "a", blocks_mask(16, 16, 2))
    (root / "masks" / "a.png").unlink()
    write_pair(root, "b", blocks_mask(16, 16, 2))
    with pytest.raises(ValueError, match=r"1 image\(s\) without a mask .*\(e\.g\. a\)"):
        load_pairs_folder(root)
    Image.new("RGB", (16, 16)).save(root / "masks" / "a.png")
    with pytest.raises(ValueError, match="is a RGB image; a mask holds one class index per pixel"):
        load_pairs_folder(root)


def test_a_missing_folder_says_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/<name>") as info:
        load_segmentation_folder(tmp_path / "nowhere")
    assert VOC_URL in str(info.value) and "SegmentationClass" in str(info.value)
    assert VOC_URL.endswith("VOCtrainval_11-May-2012.tar")


def test_pascal_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    ids = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    for split, names in ids.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            mask = blocks_mask(30, 40, 15 + i)
            mask[14:16] = IGNORE_INDEX  # VOC's outlines
            Image.fromarray(np.full((30, 40, 3), 120, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
            image = Image.fromarray(mask, mode="L").convert("P")
            image.putpalette(PALETTE.flatten().tolist())
            image.putdata(mask.flatten().tolist())
            image.save(root / "SegmentationClass" / f"{name}.png")
    assert is_segmentation_folder(tmp_path)
    train, val = load_segmentation_folder(tmp_path, image_size=24)
    assert train.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    assert VOC_CLASSES[15] == "person" and len(train) == 2 and len(val) == 1
    assert train.images.shape == (2, 3, 24, 24)
    values = set(torch.unique(train.extras["masks"]).tolist())
    assert values == {0, 1, 15, 16, IGNORE_INDEX}  # the outline stays ignored
    with pytest.raises(ValueError, match="pass image_size"):
        write = Image.fromarray(np.zeros((20, 20, 3), np.uint8))
        write.save(root / "JPEGImages" / "2007_000002.jpg")
        blank = Image.fromarray(np.zeros((20, 20), np.uint8), mode="L")
        blank.save(root / "SegmentationClass" / "2007_000002.png")
        load_segmentation_folder(tmp_path)


def test_resize_pair_interpolates_images_and_takes_nearest_classes():
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    image[:, :, 2:] = 200
    mask = torch.tensor([[0, 0, 5, 5]] * 4, dtype=torch.uint8)
    big_image, big_mask = resize_pair(image, mask, 8)
    assert big_image.shape == (3, 8, 8) and type(big_image) is torch.Tensor
    assert 0 < big_image[0, 0, 3].item() < 200  # bilinear: a value between the two
    assert set(big_mask.unique().tolist()) == {0, 5}  # nearest: no class in between
    assert big_mask[:, :4].eq(0).all() and big_mask[:, 4:].eq(5).all()


def test_load_dataset_reads_a_segmentation_folder(pairs):
    train, test = load_dataset(str(pairs), image_size=32)
    assert "masks" in train.extras and train.classes[2] == "car"
    assert len(train) + len(test) == 10
