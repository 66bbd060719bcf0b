"""Object detection: R-CNN, Fast R-CNN, Faster R-CNN and Mask R-CNN assembled from parts (backbone, proposals, RoI
pooling, heads), their training task, COCO- and VOC-style evaluation, data readers and the ``convzoo detect``
command's drawing.

Importing the package registers its networks (model cards with ``task="detection"``) and its training task.
"""

import importlib
import pkgutil

# Every module registers what it defines when imported; a new file is picked up without editing this list.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
