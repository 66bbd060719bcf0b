"""Model families, one per module; importing this package registers every variant of every family."""

import importlib
import pkgutil

from convzoo.models.base import AuxOutputs, ConvNet, FeatureExtractor, FeatureInfo

# Each family module registers its variants when imported; a new family file is picked up without editing this list.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["AuxOutputs", "ConvNet", "FeatureExtractor", "FeatureInfo"]
