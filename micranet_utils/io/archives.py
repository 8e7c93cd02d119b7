"""Extracting a tar archive without trusting it: what pooch's Untar does not check.

:func:`safe_extract` is called by the processor that unpacks the published
archive; it raises :class:`~micranet_utils.base.errors.DownloadError` itself.
"""

import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..base.errors import DownloadError
from ..base.files import human_size


def safe_extract(archive, destination, root=None, progress=False):
    """Extract a tar archive without trusting it; all or nothing.

    Every member is checked before it is written: absolute paths, ``..``
    components, symbolic or hard links that point outside the archive, and
    device files or FIFOs are refused (Python's ``data`` extraction filter is
    applied too, as a second line of defence). Members are extracted into a
    hidden temporary folder next to `destination`, which replaces it (or, if
    `destination` already exists, whose top-level entries replace the entries
    of the same name) only once everything is out. On any failure the
    temporary folder is removed: nothing half-extracted is left behind.

    Parameters
    ----------
    archive : str or Path
        A ``.tar``, ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` file. Read in one pass.
    destination : str or Path
        Folder to fill.
    root : str, optional
        If the archive's only top-level entry is a folder of this name, its
        content (not the folder itself) goes into `destination`.
    progress : bool
        Show a ``tqdm`` progress bar (bytes of the archive read).

    Returns
    -------
    Path
        `destination`.

    Raises
    ------
    DownloadError
        If the archive is unreadable, holds an unsafe member (named in the
        message), or the disk fills up.
    """
    from tqdm.auto import tqdm

    archive, destination = Path(archive), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        try:
            with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, \
                    tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=f"extracting {archive.name}", disable=not progress) as bar:
                for member in tar:
                    _check_member(archive, member)
                    if member.size > shutil.disk_usage(scratch).free:
                        raise DownloadError(f"{archive}: not enough free space in {destination.parent} "
                                            f"to extract {member.name} ({human_size(member.size)}).")
                    tar.extract(member, scratch, set_attrs=False, **_DATA_FILTER)
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DownloadError(f"{archive}: cannot extract ({type(err).__name__}: {err}); "
                                "the archive is damaged or not a tar archive.") from None
        source = scratch
        entries = [entry for entry in scratch.iterdir() if not entry.name.startswith("._")]
        if root and len(entries) == 1 and entries[0].name == root and entries[0].is_dir() \
                and not entries[0].is_symlink():
            source = entries[0]
        _move_into(source, destination, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destination


# Python >= 3.10.12 / 3.11.4 can refuse unsafe members itself: a second line of defence.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(archive, member):
    """Raise DownloadError if extracting `member` could write outside the destination."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problem = "has an absolute path"
    elif ".." in parts:
        problem = "contains '..'"
    elif member.isdev():
        problem = "is a device file or FIFO"
    elif member.issym() or member.islnk():
        base = posixpath.dirname(name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        outside = member.linkname.startswith("/") or target == ".." or target.startswith("../")
        problem = f"is a link pointing outside the archive (to {member.linkname!r})" if outside else ""
    else:
        problem = "" if (member.isfile() or member.isdir()) else "is not a regular file or folder"
    if problem:
        raise DownloadError(f"{archive}: refused to extract: member {name!r} {problem}. "
                            "Nothing was extracted; the archive may have been tampered with.")


def _move_into(source, destination, scratch):
    """Rename `source` onto `destination`, or each of its entries into an existing `destination`."""
    if not destination.exists():
        os.replace(source, destination)
        return
    for entry in list(source.iterdir()):
        target = destination / entry.name
        if target.exists() or target.is_symlink():
            old = scratch / f".old-{entry.name}"
            os.replace(target, old)  # out of the way first: the new entry appears whole
        os.replace(entry, target)
