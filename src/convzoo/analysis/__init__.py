"""Analyses of a network's structure and cost: summary tables, receptive fields, comparisons."""

from convzoo.analysis.costs import count_macs, count_params, model_costs
from convzoo.analysis.fields import ReceptiveField
from convzoo.analysis.input_size import model_in_chans, parse_input_size
from convzoo.analysis.receptive import (
    MeasuredField,
    effective_receptive_field,
    measure_receptive_field,
    plot_effective_receptive_field,
    receptive_fields,
)
from convzoo.analysis.summary import LayerRow, Summary, summary

__all__ = [
    "LayerRow",
    "MeasuredField",
    "ReceptiveField",
    "Summary",
    "count_macs",
    "count_params",
    "effective_receptive_field",
    "measure_receptive_field",
    "model_costs",
    "model_in_chans",
    "parse_input_size",
    "plot_effective_receptive_field",
    "receptive_fields",
    "summary",
]
