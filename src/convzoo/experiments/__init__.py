"""The lectures' experiments, each a function that trains what it needs through the one engine and writes a report.

Every experiment leaves a folder holding one engine run folder per training run, and its report: ``report.md`` (the
evidence header, the results table and what they show), ``results.csv`` (the same table) and ``chart.png``.
"""

from convzoo.experiments.degradation import DegradationResult, judge_degradation, run_degradation
from convzoo.experiments.report import Evidence, ExperimentFolder, Table

__all__ = ["DegradationResult", "Evidence", "ExperimentFolder", "Table", "judge_degradation", "run_degradation"]
