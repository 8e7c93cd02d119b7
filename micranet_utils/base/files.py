"""Files: written safely (complete or absent, never half written), hashed, sized for people.

A writer killed outright (``kill -9``, the machine's out-of-memory killer, a
power cut) cannot remove its temporary file. Temporary names carry the
writer's process id, ``.<name>.<pid>-<random>.tmp``, so that the next atomic
write of the same file removes the temporaries whose process is gone and
that were last written before the current process started; a temporary
another running writer is still filling is never touched.
"""

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

_STARTED = time.time()  # this process started no later than this module was imported


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
        Where to write. Hidden name ``.<name>.<pid>-<random>.tmp`` in the same
        folder; temporaries of `path` left by killed processes are removed first
        (see the module notes).

    Examples
    --------
    >>> with atomic_path("out.csv") as tmp:          # doctest: +SKIP
    ...     tmp.write_text("a,b\\n1,2\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; use the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path):
    """Remove the temporaries of `path` that a killed :func:`atomic_path` left behind.

    Only files named ``.<name>.<pid>-<random>.tmp`` whose process ``pid`` no
    longer runs on this machine and that were last modified before this
    process started. Does nothing where process ids cannot be checked (Windows).

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    if os.name != "posix":
        return []
    prefix, removed = f".{path.name}.", []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        pid, dash, _ = entry.name[len(prefix):].partition("-")
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp") and dash and pid.isdigit()):
            continue
        try:
            if (int(pid) == os.getpid() or _running(int(pid)) or not entry.is_file(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_mtime >= _STARTED):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


def _running(pid):
    """Whether process `pid` exists on this machine (POSIX)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


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
