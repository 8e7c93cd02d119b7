"""Resuming an HTTP download: what pooch lacks for multi-GB files on a slow link.

:class:`ResumableDownloader` plugs into pooch as a downloader and raises the small
exception types below, which :mod:`micranet_utils.io.download` turns into messages
for the user.
"""

import os
import posixpath
import shutil
from pathlib import Path

from ..base.files import human_size


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
