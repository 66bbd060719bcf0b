"""What every experiment writes: an evidence header, a results table (Markdown and CSV), findings and a chart.

The header states the evidence the way a result should be quoted: the data, the number of runs and their seeds,
the hardware and software, the date, and the settings, so that a table read months later says what it rests on.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convzoo._files import write_atomically

__all__ = ["Evidence", "ExperimentFolder", "Table", "cpu_name", "default_experiment_dir", "hardware"]


def hardware(device: str | torch.device | None = None) -> str:
    """The machine a result was measured on: processor or GPU, threads, and the torch version."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        chip = torch.cuda.get_device_name(device)
    else:
        chip = cpu_name()
        chip += f", {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    system = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    return f"{chip}; {system}, torch {torch.__version__}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


@dataclass
class Evidence:
    """What a result rests on, for the report's header.

    Attributes:
        experiment: What was done, in a line (e.g. "Degradation: plain and residual networks of 20 and 56 layers").
        data: The data set(s), with their sizes.
        runs: The training runs, e.g. "4 (one per network), 30 epochs each".
        seeds: The seeds of those runs.
        settings: Further settings worth quoting (recipe, epochs, temperature, ...).
        device: The device the runs used.
        date: When the experiment finished (default: now).
        hardware: The machine (default: measured from ``device``).
    """

    experiment: str
    data: str
    runs: str
    seeds: Sequence[int]
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    date: str = ""
    hardware: str = ""

    def lines(self) -> list[str]:
        """The header's lines, in Markdown."""
        date = self.date or datetime.datetime.now().isoformat(timespec="seconds")
        machine = self.hardware or hardware(self.device)
        settings = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        return [
            f"- **Experiment:** {self.experiment}",
            f"- **Data:** {self.data}",
            f"- **Runs:** {self.runs}; seeds {', '.join(map(str, self.seeds))}",
            f"- **Hardware:** {machine} (device {self.device})",
            f"- **Date:** {date}",
            *([f"- **Settings:** {settings}"] if settings else []),
        ]


@dataclass
class Table:
    """A results table: column names and rows of values (numbers are formatted in Markdown, kept whole in CSV).

    Attributes:
        columns: Column names.
        rows: One sequence of values per row, in column order.
        digits: Decimals of floats in the Markdown table.
    """

    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    digits: int = 2

    def add(self, *values: Any) -> None:
        """Append a row."""
        if len(values) != len(self.columns):
            raise ValueError(f"a row of {len(values)} values for {len(self.columns)} columns {list(self.columns)}")
        self.rows.append(values)

    def _cell(self, value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return "" if value is None else str(value)

    def markdown(self) -> str:
        """The table in Markdown."""
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(self._cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join([head, rule, *body])

    def csv(self) -> str:
        """The table as CSV, values unrounded."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(["" if v is None else v for v in row] for row in self.rows)
        return out.getvalue()


def default_experiment_dir(name: str) -> Path:
    """``runs/experiment-<name>-<time>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


class ExperimentFolder:
    """The folder of one experiment: a subfolder per training run, then the report files.

    Nothing is written until `run_dir` or `write` is called, so an experiment can check all its inputs first. A
    folder that already holds a report is refused (a finished experiment is never overwritten); one holding only
    run folders is reused, so an interrupted experiment resumes its runs (their ``--resume``).

    Args:
        path: The folder (default: ``runs/<name>-<time>``).
        name: The experiment's short name (``degradation``, ``transfer``, ...).
    """

    def __init__(self, path: str | os.PathLike[str] | None, name: str) -> None:
        self.path = Path(path) if path is not None else default_experiment_dir(name)
        self.name = name
        if (self.path / "report.md").exists():
            raise FileExistsError(
                f"{self.path} already holds a finished {name} experiment (report.md); choose another --out"
            )

    def run_dir(self, label: str) -> Path:
        """The folder of the training run ``label`` (not created: the engine creates it)."""
        return self.path / label

    def run_state(self, label: str, config: Any) -> str:
        """``"new"``, ``"finished"`` or ``"unfinished"``: what the run ``label`` left, checked against ``config``.

        Raises:
            ValueError: The run left there was trained with other settings (named).
            FileExistsError: The folder holds files but no checkpoint to continue from.
        """
        from convzoo.train import load_checkpoint
        from convzoo.train.config import check_same_settings

        run_dir = self.run_dir(label)
        if not run_dir.exists() or not any(run_dir.iterdir()):
            return "new"
        if not (run_dir / "last.pt").is_file():
            raise FileExistsError(
                f"{run_dir} holds files but no checkpoint (last.pt): that run stopped before finishing an epoch; "
                f"remove the folder to train it again"
            )
        try:
            check_same_settings(load_checkpoint(run_dir / "last.pt")["config"], config)
        except ValueError as e:
            raise ValueError(
                f"{run_dir} holds a run trained with other settings: continue this experiment with the same "
                f"settings, or choose another --out. {e}"
            ) from None
        # The engine writes a run's report.md only once it has trained its last step.
        return "finished" if (run_dir / "report.md").is_file() else "unfinished"

    def write(
        self,
        *,
        title: str,
        evidence: Evidence,
        table: Table,
        findings: Sequence[str],
        chart: Callable[[Path], None] | None = None,
        notes: Sequence[str] = (),
    ) -> Path:
        """Write ``report.md``, ``results.csv`` and, when given, ``chart.png`` (drawn by ``chart(path)``).

        Args:
            title: The report's title.
            evidence: Its header.
            table: The results.
            findings: What the results show, one sentence each (e.g. whether the effect the lecture describes
                appears, and where the result disagrees with the lecture, why).
            chart: Draws the chart into the PNG path it is given.
            notes: Further paragraphs (how to read the table, caveats).

        Returns:
            The path of report.md.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if chart is not None:
            chart_path = self.path / "chart.png"
            write_atomically(chart_path, lambda tmp: chart(Path(tmp)))
        write_atomically(self.path / "results.csv", lambda tmp: Path(tmp).write_text(table.csv()))
        parts = [
            f"# {title}",
            "",
            *evidence.lines(),
            "",
            "## Results",
            "",
            table.markdown(),
            "",
            *(["![chart](chart.png)", ""] if chart is not None else []),
            "## Findings",
            "",
            *[f"- {line}" for line in findings],
            "",
            *[p + "\n" for p in notes],
            "Files: `results.csv` (the table), "
            + ("`chart.png`, " if chart is not None else "")
            + "one engine run folder per training run (checkpoints, metrics, curves, report).",
            "",
        ]
        report = self.path / "report.md"
        write_atomically(report, lambda tmp: Path(tmp).write_text("\n".join(parts)))
        return report
