"""Analyses of a network's structure and cost."""

from convzoo.analysis.summary import LayerRow, Summary, count_macs, count_params, summary

__all__ = ["LayerRow", "Summary", "count_macs", "count_params", "summary"]
