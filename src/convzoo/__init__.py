"""convzoo: the convolutional networks of the lectures, faithful to their papers, with the tools to study them."""

# Importing the models package registers every family, and the segmentation and detection packages the networks
# built on them, so the registry is complete once convzoo is imported.
import convzoo.detection  # noqa: F401
import convzoo.models  # noqa: F401
import convzoo.segmentation  # noqa: F401
from convzoo.analysis import count_macs, count_params, summary
from convzoo.factory import create_model
from convzoo.models.base import ConvNet, FeatureExtractor, FeatureInfo
from convzoo.pretrained import Preprocessing, WeightsEntry, get_weights, list_weights, register_weights
from convzoo.registry import ModelCard, Paper, Reported, get_model_card, list_models, register_model
from convzoo.weights import (
    WeightsError,
    load_weights,
    read_state_dict,
    save_weights,
)

__version__ = "0.1.0"

__all__ = [
    "ConvNet",
    "FeatureExtractor",
    "FeatureInfo",
    "ModelCard",
    "Paper",
    "Preprocessing",
    "Reported",
    "WeightsEntry",
    "WeightsError",
    "__version__",
    "count_macs",
    "count_params",
    "create_model",
    "get_model_card",
    "get_weights",
    "list_models",
    "list_weights",
    "load_weights",
    "read_state_dict",
    "register_model",
    "register_weights",
    "save_weights",
    "summary",
]
