"""Shared by the benchmark scripts: replace one section of BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def update_section(marker: str, section: str, path: Path = BENCHMARKS) -> Path:
    """Replace the section whose heading starts with ``marker`` (a ``## `` heading) by ``section``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if marker in text:
        start = text.index(marker)
        end = text.find("\n## ", start + 1)
        text = text[:start] + section.rstrip() + "\n" + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    path.write_text(text)
    print(f"updated {path}")
    return path
