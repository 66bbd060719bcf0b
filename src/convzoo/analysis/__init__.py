"""Analyses of a network's structure and cost: summary tables, receptive fields, comparisons."""

from convzoo.analysis.receptive import (
    ReceptiveField,
    effective_receptive_field,
    plot_effective_receptive_field,
    receptive_fields,
)
from convzoo.analysis.summary import LayerRow, Summary, count_macs, count_params, summary

__all__ = [
    "LayerRow",
    "ReceptiveField",
    "Summary",
    "count_macs",
    "count_params",
    "effective_receptive_field",
    "plot_effective_receptive_field",
    "receptive_fields",
    "summary",
]
