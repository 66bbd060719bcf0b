"""Data: embedded and on-disk data sets, formats users have on disk, batched augmentation and the in-memory loader."""

import math
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.overrides import TorchFunctionMode

from convzoo.data import (
    ArrayDataset,
    Augment,
    FastLoader,
    dataset_names,
    load_dataset,
    make_shapes,
    stratified_split,
)
from convzoo.data.shapes import SHAPES, TEXTURES
from convzoo.data.stats import CIFAR10_MEAN, CIFAR10_STD

REAL_CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"
needs_real_cifar = pytest.mark.skipif(
    not (REAL_CIFAR / "test.npz").is_file(), reason=f"real CIFAR-10 arrays not present at {REAL_CIFAR}"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_images(n, h=32, w=32, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def nchw(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2)


# -- writers of the formats users have on disk -------------------------------------------------------------------------


def write_cifar10_batches(folder, train_x, train_y, test_x, test_y, classes):
    """The official python version: five pickled training batches, a test batch and batches.meta."""
    out = Path(folder) / "cifar-10-batches-py"
    out.mkdir(parents=True)

    def batch(x, y, label):
        return {
            "batch_label": label,
            "labels": [int(v) for v in y],
            "data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),  # rows of 1024 R, then G, then B values
            "filenames": [f"{i}.png" for i in range(len(x))],
        }

    for i, (x, y) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5)), 1):
        (out / f"data_batch_{i}").write_bytes(pickle.dumps(batch(x, y, f"training batch {i} of 5"), protocol=2))
    (out / "test_batch").write_bytes(pickle.dumps(batch(test_x, test_y, "testing batch 1 of 1"), protocol=2))
    meta = {"label_names": list(classes), "num_cases_per_batch": len(train_x) // 5, "num_vis": 3072}
    (out / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_image_folder(root, images, labels, classes):
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = Path(root) / classes[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.squeeze(-1) if x.shape[-1] == 1 else x).save(folder / f"{i:05d}.png")


def write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def folder_order(labels):
    """Image-folder order: by class folder, then by file name (the original index here)."""
    return np.argsort(np.asarray(labels), kind="stable")


# -- embedded sets ----------------------------------------------------------------------------------------------------


def test_dataset_names():
    assert dataset_names() == [
        "digits",
        "shapes",
        "scenes",
        "cifar10",
        "cifar100",
        "mnist",
        "fashion-mnist",
        "svhn",
        "stl10",
    ]


def test_digits_split_sizes_stratification_and_values():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits")
    assert (len(train), len(test)) == (1437, 360)
    assert train.image_size == test.image_size == (1, 8, 8) and train.classes == [str(d) for d in range(10)]
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255 and int(train.images.min()) == 0
    full = torch.bincount(torch.cat([train.labels, test.labels]), minlength=10)
    held = torch.bincount(test.labels, minlength=10)
    assert (held - full * 0.2).abs().max() < 1  # every class holds its 20% share, to the image
    # The two splits are a partition of scikit-learn's 1,797 images.
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8).reshape(len(digits.images), -1)
    ours = torch.cat([train.images, test.images]).reshape(1797, -1).numpy()
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(ours) == key(expected)


def test_digits_are_read_without_importing_scikit_learn_and_fall_back_to_it(monkeypatch, tmp_path):
    import importlib.util
    import subprocess
    import sys

    from convzoo.data import classic

    code = "import sys; from convzoo.data import load_dataset; load_dataset('digits'); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    direct = classic._digits_arrays()
    real = importlib.util.find_spec("sklearn")
    moved = importlib.util.spec_from_file_location("sklearn", tmp_path / "__init__.py", submodule_search_locations=[])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: moved if name == "sklearn" else real)
    moved.submodule_search_locations.append(str(tmp_path))  # a layout without the csv file: load_digits is asked
    fallback = classic._digits_arrays()
    assert all(np.array_equal(a, b) for a, b in zip(direct, fallback))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        classic._digits_arrays()


def test_digits_resizing_channels_and_determinism():
    train, test = load_dataset("digits", image_size=16, in_chans=3)
    assert train.image_size == test.image_size == (3, 16, 16)
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    again, _ = load_dataset("digits", image_size=16, in_chans=3)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    small, _ = load_dataset("digits")
    # Antialiased bilinear: a resize keeps the mean grey level, to rounding.
    assert abs(train.images.float().mean() - small.images.float().mean()) < 1.0


def test_shapes_are_deterministic_by_seed_and_splits_differ():
    a, b = make_shapes(120, seed=3), make_shapes(120, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    assert not torch.equal(a.images, make_shapes(120, seed=4).images)
    assert not torch.equal(a.images, make_shapes(120, seed=3, split="test").images)
    train, test = load_dataset("shapes", n_train=120, n_test=60, seed=3, image_size=24)
    assert (len(train), len(test)) == (120, 60) and train.image_size == (3, 24, 24)
    assert train.classes == list(SHAPES) and len(SHAPES) >= 4


def test_shapes_balance_and_texture_independent_of_class():
    ds = make_shapes(600, seed=0)
    assert torch.bincount(ds.labels, minlength=len(SHAPES)).tolist() == [100] * len(SHAPES)
    table = torch.zeros(len(SHAPES), len(TEXTURES), dtype=torch.long)
    table.index_put_((ds.labels, ds.extras["texture"]), torch.ones(600, dtype=torch.long), accumulate=True)
    assert (table == 600 // (len(SHAPES) * len(TEXTURES))).all()  # every (shape, texture) pair equally often
    odd = make_shapes(601, seed=1)
    counts = torch.bincount(odd.labels * len(TEXTURES) + odd.extras["texture"])
    assert counts.max() - counts.min() <= 1
    for factor in ("color", "background"):
        assert len(torch.unique(ds.extras[factor])) > 1


def test_shapes_masks_boxes_and_pixels_agree():
    ds = make_shapes(300, seed=5, image_size=32)
    masks, boxes = ds.extras["masks"], ds.extras["boxes"]
    assert masks.shape == (300, 32, 32) and masks.dtype == torch.bool and boxes.shape == (300, 4)
    assert masks.flatten(1).any(1).all()
    # Box = the mask's bounding box in pixel edges (torchvision's masks_to_boxes gives the last pixel, inclusive).
    expected = torchvision.ops.masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(boxes, expected)
    # The mask covers the drawn shape: the shape is brighter (in HSV value) than the dark background around it.
    value = ds.images.amax(1).float()
    inside = (value * masks).sum((1, 2)) / masks.sum((1, 2))
    outside = (value * ~masks).sum((1, 2)) / (~masks).sum((1, 2))
    assert (inside > outside + 60).all()
    # The shapes stay whole inside the image, a pixel off its border; scale and position vary.
    assert boxes[:, :2].min() >= 1 and boxes[:, 2:].max() <= 31
    widths = boxes[:, 2] - boxes[:, 0]
    assert widths.min() >= 6 and widths.max() - widths.min() > 8 and boxes[:, 0].std() > 2


def test_shapes_generation_is_vectorised():
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        make_shapes(50, seed=0, image_size=16)
    few = len(calls)
    calls.clear()
    with Count():
        make_shapes(500, seed=0, image_size=16)
    assert len(calls) == few  # the work is in tensor ops over the batch, not Python per image


# -- ArrayDataset -----------------------------------------------------------------------------------------------------


def test_array_dataset_mean_std_subset_and_checks():
    images = torch.randint(0, 256, (20, 3, 5, 5), dtype=torch.uint8)
    ds = ArrayDataset(images=images, labels=torch.arange(20) % 4, classes=list("abcd"), name="toy")
    mean, std = ds.mean_std()
    x = images.double() / 255
    assert np.allclose(mean, x.mean((0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, x.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False).numpy(), atol=1e-12)
    sub = ds.subset([3, 1])
    assert torch.equal(sub.images, images[[3, 1]]) and sub.labels.tolist() == [3, 1] and len(sub) == 2
    assert len(ds.subset(ds.labels == 0)) == 5
    with pytest.raises(ValueError, match=r"label 4 at position 19 is out of range for 4 classes"):
        ArrayDataset(
            images=images, labels=torch.arange(20) % 4 + (torch.arange(20) == 19), classes=list("abcd"), name="t"
        )
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(images=images.float(), labels=torch.zeros(20), classes=["a"], name="t")
    with pytest.raises(ValueError, match="20 images but 3 labels"):
        ArrayDataset(images=images, labels=torch.zeros(3, dtype=torch.long), classes=["a"], name="t")


def test_stratified_split_keeps_proportions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, test = stratified_split(labels, 0.25)
    assert len(test) == 25 and len(train) == 75 and not set(train.tolist()) & set(test.tolist())
    assert torch.bincount(labels[test]).tolist() == [13, 7, 5]  # 12.5, 7.5, 5: the tie goes to the first class
    again = stratified_split(labels, 0.25)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)


def test_unknown_name_and_wrong_options():
    with pytest.raises(ValueError, match="unknown data set 'imagenet21k': known names are digits, shapes"):
        load_dataset("imagenet21k")
    with pytest.raises(ValueError, match="shapes"):
        load_dataset("digits", n_train=10)
    with pytest.raises(ValueError, match="cannot convert them to 2"):
        load_dataset("digits", in_chans=2)


# -- real data sets in their official formats -------------------------------------------------------------------------


def test_cifar10_python_batches(tmp_path, monkeypatch):
    train_x, test_x = random_images(50, seed=1), random_images(20, seed=2)
    train_y, test_y = np.arange(50) % 10, np.arange(20) % 10
    write_cifar10_batches(tmp_path / "cifar10", train_x, train_y, test_x, test_y, CIFAR_CLASSES)
    for kwargs in ({"root": tmp_path}, {"root": tmp_path / "cifar10"}):
        train, test = load_dataset("cifar10", **kwargs)
        assert train.classes == CIFAR_CLASSES and train.name == "cifar10"
        assert torch.equal(train.images, nchw(train_x)) and train.labels.tolist() == train_y.tolist()
        assert torch.equal(test.images, nchw(test_x)) and test.labels.tolist() == test_y.tolist()
    monkeypatch.setenv("CONVZOO_DATA", str(tmp_path))
    train, _ = load_dataset("CIFAR-10", image_size=16, in_chans=1)
    assert train.image_size == (1, 16, 16)


def test_cifar100_python_files(tmp_path):
    out = tmp_path / "cifar-100-python"
    out.mkdir()
    x = random_images(12, seed=3)
    for split in ("train", "test"):
        entry = {
            "data": x.transpose(0, 3, 1, 2).reshape(12, -1),
            "fine_labels": list(range(12)),
            "coarse_labels": [0] * 12,
        }
        (out / split).write_bytes(pickle.dumps(entry, protocol=2))
    names = [f"class{i}" for i in range(100)]
    (out / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["c"] * 20}))
    train, test = load_dataset("cifar100", root=tmp_path)
    assert train.num_classes == 100 and torch.equal(test.images, nchw(x)) and test.labels.tolist() == list(range(12))


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    raw = tmp_path / name / folder / "raw"
    x = random_images(30, 28, 28, 1, seed=4)[..., 0]
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(30) % 10)
    train, test = load_dataset(name, root=tmp_path)
    assert train.image_size == (1, 28, 28) and torch.equal(train.images[:, 0], torch.from_numpy(x))
    assert test.labels.tolist() == (np.arange(30) % 10).tolist() and train.num_classes == 10


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    x = random_images(15, seed=5)
    y = np.arange(15) % 10
    for split in ("train", "test"):
        # The .mat layout: X is (32, 32, 3, N), y is (N, 1) with the digit 0 stored as 10.
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": np.where(y == 0, 10, y)[:, None]})
    train, test = load_dataset("svhn", root=tmp_path)
    assert torch.equal(train.images, nchw(x)) and train.labels.tolist() == y.tolist()


def test_stl10_binaries(tmp_path):
    out = tmp_path / "stl10_binary"
    out.mkdir()
    x = random_images(4, 96, 96, 3, seed=6)
    for split in ("train", "test"):
        # Column-major images (N, 3, 96, 96) with labels 1..10.
        (out / f"{split}_X.bin").write_bytes(x.transpose(0, 3, 2, 1).tobytes())
        (out / f"{split}_y.bin").write_bytes(np.array([1, 2, 3, 10], dtype=np.uint8).tobytes())
    (out / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    train, test = load_dataset("stl10", root=tmp_path)
    assert torch.equal(test.images, nchw(x)) and test.labels.tolist() == [0, 1, 2, 9] and train.classes[0] == "c0"


def test_svhn_without_scipy_says_so(tmp_path, monkeypatch):
    for split in ("train", "test"):
        (tmp_path / f"{split}_32x32.mat").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    with pytest.raises(ImportError, match="read with scipy, which is not installed: pip install scipy"):
        load_dataset("svhn", root=tmp_path)


def test_missing_dataset_says_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar10") in message and str(tmp_path) in message
    assert "cifar-10-batches-py/data_batch_1" in message and "batches.meta" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "download=True" in message
    monkeypatch.setenv("CONVZOO_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=r"elsewhere[\s\S]*train_32x32.mat[\s\S]*SVHN\("):
        load_dataset("svhn")
    with pytest.raises(FileNotFoundError, match="no such"):
        load_dataset(str(tmp_path / "missing.npz"))


def test_truncated_cifar_batch_is_reported(tmp_path):
    write_cifar10_batches(tmp_path, random_images(10), np.zeros(10), random_images(5), np.zeros(5), CIFAR_CLASSES)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        load_dataset("cifar10", root=tmp_path)


# -- image folders and arrays -----------------------------------------------------------------------------------------


def test_image_folder_with_train_and_test(tmp_path):
    train_x, test_x = random_images(24, 12, 10, seed=7), random_images(9, 12, 10, seed=8)
    train_y, test_y = np.arange(24) % 3, np.arange(9) % 3
    write_image_folder(tmp_path / "train", train_x, train_y, ["cat", "dog", "emu"])
    write_image_folder(tmp_path / "val", test_x, test_y, ["cat", "dog", "emu"])
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    train, test = load_dataset(str(tmp_path))
    assert train.classes == ["cat", "dog", "emu"] and train.image_size == (3, 12, 10)
    order = folder_order(train_y)
    assert torch.equal(train.images, nchw(train_x[order])) and train.labels.tolist() == train_y[order].tolist()
    assert torch.equal(test.images, nchw(test_x[folder_order(test_y)]))
    resized, _ = load_dataset(str(tmp_path), image_size=8)
    assert resized.image_size == (3, 8, 8)


def test_image_folder_grey_split_and_mixed_sizes(tmp_path):
    x = random_images(40, 8, 8, 1, seed=9)
    write_image_folder(tmp_path / "set", x, np.arange(40) % 4, ["a", "b", "c", "d"])
    train, test = load_dataset(tmp_path / "set")
    assert (len(train), len(test)) == (32, 8) and train.image_size == (1, 8, 8)
    assert torch.bincount(test.labels).tolist() == [2, 2, 2, 2]
    Image.fromarray(random_images(1, 9, 9, 3)[0]).save(tmp_path / "set" / "a" / "zz.png")
    with pytest.raises(ValueError, match=r"different sizes[\s\S]*zz.png[\s\S]*image_size"):
        load_dataset(tmp_path / "set")
    train, _ = load_dataset(tmp_path / "set", image_size=8)
    assert train.image_size == (3, 8, 8)  # one colour image makes the set RGB


def test_corrupt_image_is_named_or_skipped(tmp_path):
    write_image_folder(tmp_path, random_images(20, 8, 8, seed=10), np.arange(20) % 2, ["x", "y"])
    bad = tmp_path / "y" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png[\s\S]*skip_corrupt"):
        load_dataset(str(tmp_path))
    with pytest.warns(RuntimeWarning, match=r"skipped 1 unreadable image file\(s\).*broken\.png"):
        train, test = load_dataset(str(tmp_path), skip_corrupt=True)
    assert len(train) + len(test) == 20


def test_npz_formats(tmp_path):
    x, y = random_images(30, 6, 6, 1, seed=11)[..., 0], np.arange(30) % 3
    np.savez(tmp_path / "keras.npz", x_train=x, y_train=y[:, None], x_test=x[:5], y_test=y[:5])
    train, test = load_dataset(str(tmp_path / "keras.npz"))
    assert train.image_size == (1, 6, 6) and len(test) == 5 and train.classes == ["0", "1", "2"]
    assert torch.equal(train.images[:, 0], torch.from_numpy(x))
    # Sibling files and class names; channels-last colour images.
    xc = random_images(30, 6, 6, 3, seed=12)
    np.savez(tmp_path / "toy_train.npz", images=xc, labels=y, classes=np.array(["r", "g", "b"]))
    np.savez(tmp_path / "toy_test.npz", images=xc[:4], labels=y[:4])
    train, test = load_dataset(str(tmp_path / "toy_train.npz"), in_chans=1)
    assert train.classes == ["r", "g", "b"] and len(test) == 4 and train.image_size == (1, 6, 6)
    luma = (nchw(xc).float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert (train.images.float() - luma).abs().max() <= 0.5 + 1e-4
    # One file without a test split: a fixed stratified split.
    np.savez(tmp_path / "single.npz", images=xc, labels=y)
    train, test = load_dataset(str(tmp_path / "single.npz"))
    assert (len(train), len(test)) == (24, 6) and torch.bincount(test.labels).tolist() == [2, 2, 2]


def test_npz_bad_input(tmp_path):
    x = random_images(10, 4, 4, 3)
    np.savez(tmp_path / "labels.npz", images=x, labels=np.arange(10), classes=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"labels.npz: label 2 at position 2 is out of range for 2 classes"):
        load_dataset(str(tmp_path / "labels.npz"))
    np.savez(tmp_path / "negative.npz", images=x, labels=np.arange(10) - 1)
    with pytest.raises(ValueError, match="label -1 at position 0 is out of range"):
        load_dataset(str(tmp_path / "negative.npz"))
    np.savez(tmp_path / "rgba.npz", images=random_images(10, 4, 4, 4), labels=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match=r"4 channels; expected 1 \(grey\) or 3 \(RGB\)"):
        load_dataset(str(tmp_path / "rgba.npz"))
    np.savez(tmp_path / "float.npz", images=x / 255.0, labels=np.zeros(10, dtype=int))
    with pytest.raises(TypeError, match="must be uint8"):
        load_dataset(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "keys.npz", pictures=x)
    with pytest.raises(ValueError, match=r"holds the arrays \['pictures'\]; expected images and labels"):
        load_dataset(str(tmp_path / "keys.npz"))
    np.savez(tmp_path / "short.npz", images=x, labels=np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        load_dataset(str(tmp_path / "short.npz"))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "short.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "trunc.npz"))


@pytest.fixture(scope="module")
def real_cifar_sample():
    arrays = np.load(REAL_CIFAR / "test.npz")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(arrays["labels"]), 400, replace=False)
    return arrays["images"][pick], arrays["labels"][pick].astype(np.int64), [str(c) for c in arrays["classes"]]


@needs_real_cifar
def test_real_cifar10_through_batches_folder_and_npz(tmp_path, real_cifar_sample):
    images, labels, classes = real_cifar_sample
    assert classes == CIFAR_CLASSES
    write_cifar10_batches(tmp_path / "batches", images[:300], labels[:300], images[300:], labels[300:], classes)
    train, test = load_dataset("cifar10", root=tmp_path / "batches")
    assert torch.equal(train.images, nchw(images[:300])) and torch.equal(test.labels, torch.from_numpy(labels[300:]))

    write_image_folder(tmp_path / "folder" / "train", images[:300], labels[:300], classes)
    write_image_folder(tmp_path / "folder" / "test", images[300:], labels[300:], classes)
    ftrain, ftest = load_dataset(str(tmp_path / "folder"))
    order = folder_order(labels[:300])
    assert torch.equal(ftrain.images, nchw(images[:300][order])) and torch.equal(ftrain.labels, train.labels[order])
    assert len(ftest) == 100 and ftrain.classes == classes

    np.savez(tmp_path / "train.npz", images=images[:300], labels=labels[:300], classes=np.array(classes))
    np.savez(tmp_path / "test.npz", images=images[300:], labels=labels[300:])
    ntrain, ntest = load_dataset(str(tmp_path))  # a folder holding train.npz / test.npz
    assert torch.equal(ntrain.images, train.images) and torch.equal(ntest.images, test.images)
    mean, std = ntrain.mean_std()
    assert 0.4 < mean[0] < 0.56 and 0.2 < std[0] < 0.3  # CIFAR-10's statistics: about 0.49 and 0.25


@needs_real_cifar
def test_real_cifar10_npz_as_shipped():
    train, test = load_dataset(str(REAL_CIFAR / "test.npz"))
    assert (len(train), len(test)) == (8000, 2000) and train.classes == CIFAR_CLASSES
    assert torch.bincount(test.labels).tolist() == [200] * 10


@pytest.mark.skipif(
    not (REAL_CIFAR / "train.npz").is_file(), reason=f"real CIFAR-10 arrays not present at {REAL_CIFAR}"
)
def test_cifar10_statistics_are_those_of_its_training_set():
    train, _ = load_dataset(str(REAL_CIFAR / "train.npz"))
    assert len(train) == 50000
    mean, std = train.mean_std()
    assert mean == pytest.approx(CIFAR10_MEAN, abs=5e-5) and std == pytest.approx(CIFAR10_STD, abs=5e-5)


# -- Augment ----------------------------------------------------------------------------------------------------------


def test_augment_normalisation_is_exact_and_matches_torchvision():
    x = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = Augment(mean=mean, std=std)(x)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # The same float operations as torchvision's ToDtype(scale=True) + Normalize: equal to the bit.
    peer = Augment(mean=mean, std=std).to_torchvision()
    assert torch.equal(torch.stack([peer(image) for image in x]), out)
    assert torch.equal(Augment()(x), x.float() * (1 / 255))


def test_augment_crop_with_padding_is_a_shifted_window():
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = Augment(crop=8, padding=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2)).float() * (1 / 255)
    shifts = set()
    for b in range(16):
        hits = [(i, j) for i in range(5) for j in range(5) if torch.equal(out[b], padded[b, :, i : i + 8, j : j + 8])]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) > 4  # the offsets vary
    reflect = Augment(crop=6, padding=2, padding_mode="reflect")(x)
    assert reflect.shape == (16, 3, 6, 6) and (reflect > 0).all()  # reflection never pads with zeros


def test_augment_flip_flips():
    x = torch.randint(0, 256, (64, 1, 4, 5), dtype=torch.uint8)
    out = Augment(flip=True)(x, torch.Generator().manual_seed(1))
    same = (out == x.float() * (1 / 255)).flatten(1).all(1)
    mirrored = (out == x.flip(3).float() * (1 / 255)).flatten(1).all(1)
    assert (same | mirrored).all() and 16 < int(mirrored.sum()) < 48


def test_augment_is_deterministic_with_a_seeded_generator():
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    aug = Augment(crop=14, padding=3, flip=True, color_jitter=0.4, out_size=12, mean=(0.5,), std=(0.2,))
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert a.shape == (32, 3, 12, 12) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= (0 - 0.5) / 0.2 - 1e-5 and a.max() <= (1 - 0.5) / 0.2 + 1e-5


def test_augment_random_resized_crop_and_jitter():
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    whole = Augment(random_resized_crop=(1.0, 1.0), ratio=(1.0, 1.0), crop=20)(x)
    torch.testing.assert_close(whole, x.float() / 255, atol=1e-5, rtol=0)  # the whole image, resampled in place
    out = Augment(random_resized_crop=(0.1, 0.5), crop=12, flip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 12, 12) and torch.isfinite(out).all()
    grey = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    jittered = Augment(color_jitter=0.5)(grey, torch.Generator().manual_seed(0))
    assert jittered.shape == grey.shape and not torch.equal(jittered, grey.float() / 255)
    assert jittered.min() >= 0 and jittered.max() <= 1
    steps = Augment(crop=32, padding=4, flip=True, color_jitter=0.2).to_torchvision().transforms
    names = [type(step).__name__ for step in steps]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ColorJitter", "ToDtype", "Normalize"]
    assert steps[0].padding == [4, 4, 4, 4] and steps[2].brightness == (0.8, 1.2)


def test_augment_does_no_per_image_python_work():
    calls = []

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    aug = Augment(crop=16, padding=2, flip=True, color_jitter=0.3, mean=(0.5,), std=(0.5,))
    aug(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))  # fills the per-device caches
    counts = []
    for n in (2, 64):
        x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)
        calls.clear()
        with Count():
            aug(x, torch.Generator().manual_seed(0))
        counts.append(len(calls))
    assert counts[0] == counts[1]


def test_augment_bad_input():
    with pytest.raises(TypeError, match="uint8 batches"):
        Augment()(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded image"):
        Augment(crop=40, padding=2)(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mean/std have 3 values for images of 1 channels"):
        Augment(mean=(0.1, 0.2, 0.3), std=(1, 1, 1))(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="padding_mode"):
        Augment(padding=2, padding_mode="circular")


@needs_cuda
def test_augment_on_cuda_matches_cpu():
    x = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    aug = Augment(crop=12, padding=2, flip=True, mean=(0.4,), std=(0.3,))
    cpu = aug(x, torch.Generator().manual_seed(3))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-6)


# -- FastLoader -------------------------------------------------------------------------------------------------------


def indexed(n):
    """A data set whose label is the image's index, and whose image encodes it too."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ArrayDataset(images=images, labels=torch.arange(n), classes=[str(i) for i in range(n)], name="indexed")


def epoch_labels(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_fast_loader_covers_every_index_once_and_reshuffles():
    ds = indexed(103)
    loader = FastLoader(ds, batch_size=10, shuffle=True, augment=Augment())
    assert len(loader) == 11
    first = epoch_labels(loader)
    assert sorted(first) == list(range(103)) and first != list(range(103))
    assert epoch_labels(loader) == first  # the same epoch again: the same order
    loader.set_epoch(1)
    second = epoch_labels(loader)
    assert sorted(second) == list(range(103)) and second != first
    for x, y in loader:
        assert (
            x.dtype == torch.float32
            and y.dtype == torch.int64
            and torch.equal((x[:, 0, 0, 0] * 255).round(), (y % 256).float())
        )
    plain = FastLoader(ds, batch_size=10, shuffle=False, augment=None)
    assert epoch_labels(plain) == list(range(103))


def test_fast_loader_augmentation_repeats_per_epoch_and_rank():
    ds = indexed(64)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    ds = ArrayDataset(images=images, labels=ds.labels, classes=ds.classes, name="rand")
    aug = Augment(crop=8, padding=2, flip=True)
    a = FastLoader(ds, batch_size=16, shuffle=True, augment=aug, seed=5)
    b = FastLoader(ds, batch_size=16, shuffle=True, augment=aug, seed=5)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.set_epoch(2)
    b.set_epoch(3)
    assert not torch.equal(next(iter(a))[0], next(iter(b))[0])
    # Identical images on two ranks: each rank draws its own augmentation.
    same = ArrayDataset(images=images[:1].expand(64, -1, -1, -1), labels=ds.labels, classes=ds.classes, name="same")
    r0, r1 = (FastLoader(same, batch_size=32, shuffle=True, augment=aug, rank=r, world_size=2) for r in (0, 1))
    assert not torch.equal(next(iter(r0))[0], next(iter(r1))[0])


@pytest.mark.parametrize(("n", "drop_last"), [(40, False), (41, False), (41, True)])
def test_fast_loader_shards_are_disjoint_and_equal(n, drop_last):
    ds = indexed(n)
    shards = []
    for rank in range(2):
        loader = FastLoader(
            ds, batch_size=8, shuffle=True, augment=Augment(), seed=3, rank=rank, world_size=2, drop_last=drop_last
        )
        loader.set_epoch(4)
        shards.append(loader.indices().tolist())
        assert len(loader) == (loader.num_samples // 8 if drop_last else math.ceil(loader.num_samples / 8))
    assert len(shards[0]) == len(shards[1])
    union = set(shards[0]) | set(shards[1])
    if n % 2 == 0:
        assert not set(shards[0]) & set(shards[1]) and union == set(range(n))
    elif drop_last:  # the tail is dropped: 40 distinct images, one left out
        assert not set(shards[0]) & set(shards[1]) and len(union) == n - 1
    else:  # padded by repeating the first index of the permutation: every image, one of them twice
        assert union == set(range(n)) and len(shards[0]) == (n + 1) // 2


def test_fast_loader_leaves_the_thread_setting_to_the_consumer():
    before = torch.get_num_threads()
    seen = [torch.get_num_threads() for _ in FastLoader(indexed(30), batch_size=8, shuffle=True, augment=Augment())]
    assert seen == [before] * 4 and torch.get_num_threads() == before


def test_fast_loader_drop_last_and_batch_sizes():
    ds = indexed(10)
    keep = FastLoader(ds, batch_size=4, shuffle=False, augment=Augment())
    drop = FastLoader(ds, batch_size=4, shuffle=True, augment=Augment(), drop_last=True)
    assert [len(y) for _, y in keep] == [4, 4, 2] and len(keep) == 3
    assert [len(y) for _, y in drop] == [4, 4] and len(drop) == 2
    with pytest.raises(ValueError, match="rank must lie"):
        FastLoader(ds, batch_size=4, shuffle=True, augment=Augment(), rank=2, world_size=2)


@needs_cuda
def test_fast_loader_on_cuda():
    loader = FastLoader(indexed(50), batch_size=16, shuffle=True, augment=Augment(flip=True), device="cuda")
    batches = list(loader)
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
    cpu = FastLoader(indexed(50), batch_size=16, shuffle=True, augment=Augment(flip=True))
    assert [y.tolist() for _, y in batches] == [y.tolist() for _, y in cpu]
