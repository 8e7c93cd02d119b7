"""Extracting a tar archive without trusting it: what pooch's Untar does not check.

:func:`safe_extract` is called by the processor that unpacks the published
archive; it raises :class:`~micranet_utils.base.errors.DownloadError` itself.
"""

import bz2
import gzip
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections import deque
from contextlib import nullcontext
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

    An archive cut short is refused even where the cut falls between two
    members (``tar`` itself would stop there without a word): the compressed
    stream must end with its own end marker and checksum (gzip's CRC-32 and
    length, bzip2's and xz's end of stream), and the tar stream with its
    end-of-archive marker (two zero blocks).

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
        If the archive is unreadable or incomplete, holds an unsafe member
        (named in the message), or the disk fills up.
    """
    from tqdm.auto import tqdm

    archive, destination = Path(archive), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        try:
            with open(archive, "rb") as raw, _decompressed(raw) as stream, \
                    tarfile.open(fileobj=(tail := _Tail(stream)), mode="r|") as tar, \
                    tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=f"extracting {archive.name}", disable=not progress) as bar:
                for member in tar:
                    _check_member(archive, member)
                    if member.size > shutil.disk_usage(scratch).free:
                        raise DownloadError(f"{archive}: not enough free space in {destination.parent} "
                                            f"to extract {member.name} ({human_size(member.size)}).")
                    tar.extract(member, scratch, set_attrs=False, **_DATA_FILTER)
                    bar.update(raw.tell() - bar.n)
                _check_complete(archive, tar.offset, tail)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
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


def _decompressed(raw):
    """`raw` read through the decompressor its first bytes name (gzip, bzip2, xz), or as is.

    Unlike tarfile's own, these check the end of the compressed stream: a
    stream cut short raises EOFError, a wrong checksum an OSError.
    """
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return nullcontext(raw)


class _Tail:
    """A stream that counts what is read from it and keeps the last `keep` bytes."""

    def __init__(self, stream, keep=1 << 20):
        self.stream, self.keep, self.total, self.chunks, self.kept = stream, keep, 0, deque(), 0

    def read(self, size=-1):
        data = self.stream.read(size)
        self.total += len(data)
        self.chunks.append(data)
        self.kept += len(data)
        while self.kept - len(self.chunks[0]) >= self.keep:
            self.kept -= len(self.chunks.popleft())
        return data

    def after(self, offset):
        """The bytes from `offset` to the end of what was read, if still kept (else None)."""
        start = self.total - self.kept
        return b"".join(self.chunks)[offset - start:] if offset >= start else None


def _check_complete(archive, end, tail):
    """Raise DownloadError unless the tar stream ends with two zero blocks at `end`.

    Reads the rest of the stream, so that the decompressor checks its own end.
    """
    while tail.read(1 << 20):
        pass
    rest = tail.after(end)
    marker = 2 * tarfile.BLOCKSIZE
    if rest is None or len(rest) < marker or rest[:marker].count(0) != marker:
        raise DownloadError(f"{archive}: incomplete archive (no end-of-archive marker after {end:,} bytes); "
                            "it was probably cut short. Nothing was extracted; download it again.")


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
