"""Looking inside a network: filters, feature maps, top-activating images, activation maximisation, saliency,
embeddings, and texture versus shape bias. Functions return arrays; the ``plot_*`` ones write PNGs."""

from convzoo.viz._load import Network, load_network, read_image
from convzoo.viz.embed import (
    nearest_neighbour_accuracy,
    nearest_neighbours,
    penultimate_features,
    plot_embedding,
    plot_neighbours,
    project,
)
from convzoo.viz.filters import conv_layer_names, filter_grid, filter_tiles, filter_weights, plot_filters
from convzoo.viz.grid import make_grid, save_grid
from convzoo.viz.maps import (
    TopActivations,
    feature_map_grid,
    feature_maps,
    layer_activations,
    plot_feature_maps,
    plot_top_activations,
    receptive_box,
    top_activations,
)
from convzoo.viz.maximize import MaximizeConfig, Maximized, Objective, evaluate_objective, maximize
from convzoo.viz.saliency import Attribution, attribute, overlay
from convzoo.viz.texture import (
    CLASS_TEXTURES,
    CUE_TEXTURES,
    ShapeBias,
    make_cue_shapes,
    measure_shape_bias,
    plot_shape_bias,
    shape_bias,
    shape_bias_table,
    write_shape_bias_report,
)

__all__ = [
    "CLASS_TEXTURES",
    "CUE_TEXTURES",
    "Attribution",
    "MaximizeConfig",
    "Maximized",
    "Network",
    "Objective",
    "ShapeBias",
    "TopActivations",
    "attribute",
    "conv_layer_names",
    "evaluate_objective",
    "feature_map_grid",
    "feature_maps",
    "filter_grid",
    "filter_tiles",
    "filter_weights",
    "layer_activations",
    "load_network",
    "make_cue_shapes",
    "make_grid",
    "maximize",
    "measure_shape_bias",
    "nearest_neighbour_accuracy",
    "nearest_neighbours",
    "overlay",
    "penultimate_features",
    "plot_embedding",
    "plot_feature_maps",
    "plot_filters",
    "plot_neighbours",
    "plot_shape_bias",
    "plot_top_activations",
    "project",
    "read_image",
    "receptive_box",
    "save_grid",
    "shape_bias",
    "shape_bias_table",
    "top_activations",
    "write_shape_bias_report",
]
