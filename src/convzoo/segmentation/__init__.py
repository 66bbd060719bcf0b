"""Semantic segmentation: networks that label every pixel (FCN, U-Net, convolutionalised classifiers), their
training task, losses and metrics, data readers and the ``convzoo segment`` command's drawing.

Importing the package registers its networks (model cards with ``task="segmentation"``) and its training task.
"""

import importlib
import pkgutil

# Every module registers what it defines when imported; a new file is picked up without editing this list.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
