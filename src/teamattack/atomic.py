"""Atomic file writes: a crash never leaves a half-written file, and no fixed temporary name.

The new content goes to a fresh file made by ``tempfile.mkstemp`` in the target's own folder
(``O_EXCL``: never an existing file or a symlink planted there), is flushed to disk, and is then
renamed over the target with ``os.replace`` (which replaces a symlink at the target itself rather
than writing through it).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then move it to ``path``.

    ``write`` must write the whole content to the path it is given. The parent folder is created.
    The file gets the permissions of a normally created file (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Make sure a file can be created at ``path`` (or inside it, when ``folder``): create the
    folder, then create and remove a temporary file there. Raises ``OSError`` (PermissionError,
    NotADirectoryError, ...) when not; returns the path."""
    path = Path(path).expanduser()
    parent = path if folder else path.parent
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; a file name is needed")
    parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".teamattack-check.", dir=parent)
    os.close(fd)
    os.unlink(name)
    return path
