"""Files: written safely (complete or absent, never half written), hashed, sized for people."""

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Give a temporary path next to `path`; move it onto `path` only on success.

    The temporary file lives in the same folder (hence on the same file
    system), so the final :func:`os.replace` is atomic: readers see either the
    previous file or the new one, never a partial one. On any exception the
    temporary file is removed and `path` is left untouched.

    Parameters
    ----------
    path : str or Path
        Final destination.

    Yields
    ------
    Path
        Where to write. Hidden name ``.<name>.<random>.tmp`` in the same folder.

    Examples
    --------
    >>> with atomic_path("out.csv") as tmp:          # doctest: +SKIP
    ...     tmp.write_text("a,b\\n1,2\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; use the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, write):
    """Call ``write(tmp_path)`` then atomically move the result to `path`.

    Parameters
    ----------
    path : str or Path
        Final destination.
    write : callable
        Called with the temporary :class:`~pathlib.Path`; must create the file.

    Returns
    -------
    Path
        `path`, now complete.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def human_size(size):
    """A byte count for people: ``1536`` -> ``'1.5 KB'``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def file_sha256(path):
    """SHA-256 of a file, hex digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
