"""Data: embedded and on-disk data sets held in memory, batched augmentation on the device, a fast loader.

train, test = load_dataset("digits", image_size=32)            # or "shapes", "cifar10", a .npz file, a folder
mean, std = train.mean_std()
augment = Augment(crop=32, padding=4, flip=True, mean=mean, std=std)
loader = FastLoader(train, batch_size=128, shuffle=True, augment=augment, device="cuda", drop_last=True)
for epoch in range(epochs):
    loader.set_epoch(epoch)
    for images, labels in loader:                               # float, normalised, already on the device
        ...
"""

from convzoo.data.arrays import ArrayDataset, convert_channels, resize_images, stratified_split
from convzoo.data.classic import default_data_root
from convzoo.data.datasets import dataset_names, load_dataset
from convzoo.data.features import FeatureSet
from convzoo.data.loader import FastLoader
from convzoo.data.readers import load_image_folder, load_npz
from convzoo.data.scenes import SCENE_CLASSES, make_scenes
from convzoo.data.shapes import make_shapes
from convzoo.data.transforms import Augment

__all__ = [
    "SCENE_CLASSES",
    "ArrayDataset",
    "Augment",
    "FastLoader",
    "FeatureSet",
    "convert_channels",
    "dataset_names",
    "default_data_root",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "make_scenes",
    "make_shapes",
    "resize_images",
    "stratified_split",
]
