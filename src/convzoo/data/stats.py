"""Per-channel pixel statistics of the standard data sets, in [0, 1] units, to normalise their images with.

Plain tuples in RGB order, with no imports, so that model cards and data code can share them.
"""

# ImageNet-1k training set: the statistics torchvision's and timm's pretrained ImageNet weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-10 training set (50,000 images): what `ArrayDataset.mean_std` gives for it, to four decimals.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD"]
