"""Reading COCO-format and Pascal VOC folders into padded detection data sets."""

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.detection.data import VOC_CLASSES, is_detection_folder, load_detection_folder, read_coco, read_voc


def _save_image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _coco_folder(root, *, bad_category=False):
    """Train: 2 images of 40x30; val: 1 image. Categories 3 (cat) and 7 (dog)."""
    for split, names in (("train", ["a.png", "b.png"]), ("val", ["c.png"])):
        images, annotations = [], []
        for i, name in enumerate(names):
            _save_image(root / split / name, 40, 30, seed=i)
            images.append({"id": 10 + i, "file_name": name, "width": 40, "height": 30})
        rect = [[4, 3, 20, 3, 20, 15, 4, 15]]  # the polygon of the box (4, 3) - (20, 15)
        annotations += [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [4, 3, 16, 12], "segmentation": rect, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 99 if bad_category else 7, "bbox": [30, 20, 20, 20], "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [5, 5, 0, 8], "iscrowd": 0},  # zero width
            {"id": 4, "image_id": 10, "category_id": 7, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        ]
        if split == "train":
            annotations.append({"id": 5, "image_id": 11, "category_id": 7, "bbox": [0, 0, 8, 6], "iscrowd": 0})
        data = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_coco_folder_boxes_masks_and_warnings(tmp_path):
    root = _coco_folder(tmp_path / "coco")
    assert is_detection_folder(root) and not is_detection_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, test = load_detection_folder(root, image_size=20)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "instances_train: dropped 1 box(es) of zero area or wholly outside their image, clipped 1 box(es) to the image",
        "instances_train: left out 1 crowd annotation(s) (iscrowd=1)",
        "instances_val: dropped 1 box(es) of zero area or wholly outside their image, clipped 1 box(es) to the image",
        "instances_val: left out 1 crowd annotation(s) (iscrowd=1)",
    ]
    assert (len(train), len(test)) == (2, 1)
    assert train.classes == ["background", "cat", "dog"] and train.images.shape == (2, 3, 20, 20)
    # 40x30 -> 20x20 scales x by 1/2 and y by 2/3; the second box is clipped to the image first.
    boxes, labels = train.extras["boxes"], train.extras["box_labels"]
    assert boxes.shape == (2, 2, 4) and labels.tolist() == [[1, 2], [2, -1]]
    torch.testing.assert_close(boxes[0], torch.tensor([[2.0, 2, 10, 10], [15, 40 / 3, 20, 20]]))
    torch.testing.assert_close(boxes[1, 0], torch.tensor([0.0, 0, 4, 4]))
    assert (boxes[1, 1] == 0).all()
    assert train.labels.tolist() == [1, 2]  # the largest object's class
    masks = train.extras["instance_masks"]
    assert masks.shape == (2, 2, 20, 20) and masks.dtype == torch.bool
    assert masks[0, 0].sum() == 64 and masks[0, 0, 2:10, 2:10].all()  # the polygon, resized with its box
    assert not masks[0, 1].any()  # an annotation without a segmentation
    assert train.extras["masks"][0, 5, 5] == 1 and train.extras["masks"][0, 0, 0] == 0


def test_coco_without_pycocotools_reads_boxes_only(tmp_path, monkeypatch):
    root = _coco_folder(tmp_path / "coco")
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = read_coco(root / "annotations" / "instances_train.json", root)
    assert "pycocotools is not installed" in str(caught[0].message)
    assert "instance_masks" not in train.extras and train.images.shape[-2:] == (30, 40)


def test_coco_errors(tmp_path):
    root = _coco_folder(tmp_path / "bad", bad_category=True)
    with pytest.raises(ValueError, match="category_id 99"):
        load_detection_folder(root)
    root = _coco_folder(tmp_path / "missing")
    (root / "train" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="b.png"):
        load_detection_folder(root)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a detection folder"):
        load_detection_folder(tmp_path / "plain")
    with pytest.raises(FileNotFoundError):
        load_detection_folder(tmp_path / "nowhere")


def _voc_xml(filename, objects):
    parts = [f"<annotation><filename>{filename}</filename>"]
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _voc_folder(root, names=("dog", "person"), sizes=((32, 32), (32, 32), (32, 32))):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objects = {
        "a": [(names[0], (1, 1, 10, 20), False), (names[1], (5, 5, 30, 30), True)],
        "b": [(names[1], (3, 4, 12, 16), False)],
        "c": [],
    }
    for (image_id, objs), (w, h) in zip(objects.items(), sizes):
        _save_image(root / "JPEGImages" / f"{image_id}.jpg", w, h)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(f"{image_id}.jpg", objs))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\n")
    return root


def test_voc_folder(tmp_path):
    root = _voc_folder(tmp_path / "VOC2007")
    assert is_detection_folder(root)
    train, test = load_detection_folder(root, image_size=16)
    assert train.classes == ["background", *VOC_CLASSES] and (len(train), len(test)) == (2, 1)
    dog, person = VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1
    assert train.extras["box_labels"].tolist() == [[dog, person], [person, -1]]
    # 1-based inclusive corners (1, 1, 10, 20) are the pixel edges (0, 0, 10, 20); halved to 16x16.
    torch.testing.assert_close(train.extras["boxes"][0, 0], torch.tensor([0.0, 0, 5, 10]))
    assert train.extras["difficult"].tolist() == [[False, True], [False, False]]
    assert test.extras["box_labels"].tolist() == [[-1]] and test.labels.tolist() == [0]
    assert "instance_masks" not in train.extras


def test_voc_other_names_and_errors(tmp_path):
    train, _ = load_detection_folder(_voc_folder(tmp_path / "own", names=("zebra", "apple")))
    assert train.classes == ["background", "apple", "zebra"] and train.images.shape[-2:] == (32, 32)
    with pytest.raises(ValueError, match="class 'zebra'"):
        read_voc(tmp_path / "own", "train", classes=["apple"])
    mixed = _voc_folder(tmp_path / "mixed", sizes=((32, 32), (40, 20), (32, 32)))
    with pytest.raises(ValueError, match="several sizes"):
        load_detection_folder(mixed)
    (mixed / "Annotations" / "b.xml").write_text("<annotation><object><name>dog</name></object>")
    with pytest.raises(ValueError, match="b.xml"):
        load_detection_folder(mixed, image_size=16)
    (mixed / "ImageSets" / "Main" / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt"):
        load_detection_folder(mixed, image_size=16)


def test_load_dataset_reads_a_detection_folder_for_a_detector(tmp_path):
    from convzoo.data import load_dataset

    root = _voc_folder(tmp_path / "VOC2007")
    train, test = load_dataset(root, image_size=16, task="detection")
    assert train.extras["box_labels"].shape == (2, 2) and len(test) == 1
    again, _ = load_dataset(root, image_size=16)  # recognised without being told
    assert torch.equal(again.extras["boxes"], train.extras["boxes"])
    with pytest.raises(ValueError, match="class"):
        load_dataset(root, image_size=16, task="classification")  # as class folders it is no image folder
