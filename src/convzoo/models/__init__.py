"""Model families, one per module; importing this package registers every variant."""

from convzoo.models import resnet  # noqa: F401
from convzoo.models.base import ConvNet, FeatureExtractor, FeatureInfo

__all__ = ["ConvNet", "FeatureExtractor", "FeatureInfo"]
