"""Where convzoo keeps its caches, and writing a file so that a crash never leaves half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def convzoo_home() -> Path:
    """``$CONVZOO_HOME``, default ``~/.cache/convzoo``: downloaded weights and measured step formats."""
    return Path(os.environ.get("CONVZOO_HOME", Path.home() / ".cache" / "convzoo"))


def _umask() -> int:
    # The umask can only be read by setting it; it is put back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)`` beside ``path``, then rename the result onto ``path``.

    The parent folder is created; the temporary file is removed if ``write`` fails, and ``path`` is untouched.
    The file gets the permissions ``open`` would give a new file (0666 less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
