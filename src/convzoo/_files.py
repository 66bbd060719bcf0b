"""Where convzoo keeps its caches, and writing a file so that a crash never leaves half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def convzoo_home() -> Path:
    """``$CONVZOO_HOME``, default ``~/.cache/convzoo``: downloaded weights and measured step formats."""
    return Path(os.environ.get("CONVZOO_HOME", Path.home() / ".cache" / "convzoo"))


def write_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)`` beside ``path``, then rename the result onto ``path``.

    The parent folder is created; the temporary file is removed if ``write`` fails, and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
