"""The two things pooch lacks: resuming an HTTP download, and extracting a tar archive safely.

:class:`ResumableDownloader` plugs into pooch as a downloader and raises the small
exception types below, which :mod:`micranet_utils.download` turns into messages
for the user. :func:`safe_extract` is called by the processor that unpacks the
published archive; it raises :class:`~micranet_utils.errors.DownloadError` itself.
"""

import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import DownloadError


class Retry(ValueError):
    """A failure worth another try (pooch retries ValueError): broken connection, server error."""


class GiveUp(Exception):
    """A failure no retry can fix (pooch lets it through): 404, full disk. ``status``: HTTP status or None."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Unreachable(GiveUp):
    """No answer from the server at all: no network, DNS failure, connection refused, timeout."""

    def __init__(self, url, reason):
        super().__init__(f"cannot reach {url} ({reason})")
        self.url, self.reason = url, reason


def human_size(size):
    """``1536`` -> ``'1.5 KB'``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _reason(err, timeout):
    """A few words on why a connection failed, from a requests exception."""
    import requests

    text = str(err)
    if isinstance(err, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if "refused" in text.lower():
        return "connection refused"
    if any(word in text for word in ("NameResolution", "getaddrinfo", "not known", "nodename")):
        return "host name not found: no network, or no DNS"
    return f"network error: {text.rsplit(': ', 1)[-1].rstrip(')')}"


class ResumableDownloader:
    """A pooch downloader that resumes an interrupted HTTP download.

    Bytes go to a hidden ``.<name>.part`` file next to the destination. If the
    connection breaks, the part stays; the next call (pooch's retry, or a new
    run) asks the server for the rest with ``Range: bytes=<size>-`` (guarded by
    ``If-Range`` so a file changed on the server restarts from zero). Servers
    that ignore ``Range`` answer 200 and the download simply starts over. Only
    a complete part is renamed onto the file pooch then hash-checks and moves
    into place, so a partial download never looks complete.

    Parameters
    ----------
    progress : bool
        Show a ``tqdm`` progress bar.
    timeout : float
        Seconds to wait for the server to connect or to send the next bytes.
    extract_factor : float
        Free space required beyond the download, as a multiple of its size
        (1.0 for an archive that will be extracted next to itself).
    size_hint : int, optional
        Expected size in bytes, for the free-space check when the server
        sends no ``Content-Length``.
    before_download : callable, optional
        Called with no argument just before bytes are requested (e.g. to
        print a licence note); not called when pooch finds the file cached.
    chunk_size : int
        Bytes read at a time.

    Raises
    ------
    Retry
        Broken connection, short body, server error (5xx): pooch tries again.
    GiveUp, Unreachable
        Client error (4xx), not enough disk space, no answer at all.
    """

    def __init__(self, progress=True, timeout=60.0, extract_factor=0.0, size_hint=None,
                 before_download=None, chunk_size=1 << 20):
        self.progress, self.timeout, self.chunk_size = progress, timeout, chunk_size
        self.extract_factor, self.size_hint, self.before_download = extract_factor, size_hint, before_download

    def __call__(self, url, output_file, pooch_instance, check_only=False):
        """Download `url` into `output_file` (pooch's downloader protocol)."""
        import requests

        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).status_code == 200
        if self.before_download is not None:
            self.before_download()
        part = Path(output_file).parent / f".{posixpath.basename(url)}.part"
        for _ in range(2):  # a second round only after throwing away a stale part
            have = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity"}
            validator = _read_text(part.with_name(part.name + ".validator"))
            if have:
                headers["Range"] = f"bytes={have}-"
                if validator:
                    headers["If-Range"] = validator
            try:
                response = requests.get(url, headers=headers, stream=True, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                raise Unreachable(url, _reason(err, self.timeout)) from None
            with response:
                if response.status_code == 416 and have:
                    _remove_part(part)
                    continue
                _check_status(url, response)
                start, total = _content_range(response, have)
                if start is None:
                    _remove_part(part)
                    continue
                self._check_space(part.parent, url, start, total)
                if start == 0:
                    etag = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
                    part.with_name(part.name + ".validator").write_text(etag)
                self._receive(url, response, part, start, total)
            os.replace(part, output_file)
            part.with_name(part.name + ".validator").unlink(missing_ok=True)
            return None
        raise Retry(f"{url}: the server did not honour the resume request; retrying from the start.")

    def _check_space(self, folder, url, start, total):
        total = total or self.size_hint
        if not total:
            return
        need = max(0, total - start) + self.extract_factor * total
        free = shutil.disk_usage(folder).free
        if free < need:
            what = "download and extract" if self.extract_factor else "download"
            raise GiveUp(f"not enough free space in {folder} to {what} {url}: about {human_size(need)} needed, "
                         f"{human_size(free)} free. Free some space, or set MICRANET_HOME to a folder on a "
                         "larger disk.")

    def _receive(self, url, response, part, start, total):
        from tqdm.auto import tqdm
        from urllib3.exceptions import HTTPError

        with open(part, "ab" if start else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=posixpath.basename(url), disable=not self.progress) as bar:
            try:
                for chunk in _arrived(response.raw, self.chunk_size):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (HTTPError, OSError) as err:
                out.flush()
                raise Retry(f"{url}: the connection broke after {human_size(out.tell())} "
                            f"of {human_size(total) if total else '?'} ({type(err).__name__}).") from None
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if total is not None and size != total:
            raise Retry(f"{url}: the server closed the connection after {human_size(size)} of {human_size(total)}.")


def _arrived(raw, size):
    """The body as it arrives, undecoded: a hang loses none of the bytes already received."""
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3: read() waits for a full chunk; keep chunks small
        yield from raw.stream(1 << 16, decode_content=False)
        return
    while True:
        chunk = read1(size, decode_content=False)
        if not chunk:
            return
        yield chunk


def _read_text(path):
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _remove_part(part):
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".validator").unlink(missing_ok=True)


def _check_status(url, response):
    status, reason = response.status_code, response.reason or ""
    if status < 400:
        return
    if status >= 500:
        raise Retry(f"{url}: the server failed ({status} {reason}); try again later.")
    raise GiveUp(f"{url}: the server answered {status} {reason}.", status=status)


def _content_range(response, have):
    """(first byte sent, total size or None); first byte None if a 206 does not start at `have`."""
    length = response.headers.get("Content-Length")
    if response.status_code != 206:
        return 0, int(length) if length else None
    value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        span, total = value.split(" ", 1)[1].split("/")
        start = int(span.split("-")[0])
    except (IndexError, ValueError):
        return None, None
    return (start if start == have else None), (int(total) if total != "*" else None)


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

