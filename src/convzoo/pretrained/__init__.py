"""Named weights: the registry, the entries shipped with the package and torchvision's, and their preprocessing."""

from convzoo.pretrained.entries import (
    Preprocessing,
    WeightsEntry,
    default_weights,
    find_weights,
    get_weights,
    list_weights,
    package_file,
    register_weights,
)

__all__ = [
    "Preprocessing",
    "WeightsEntry",
    "default_weights",
    "find_weights",
    "get_weights",
    "list_weights",
    "package_file",
    "register_weights",
]
