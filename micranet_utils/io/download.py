"""Download the published MICRA-Net models and data sets into a local cache, safely.

The original authors (Bilodeau et al., FLClab, Université Laval) publish one
archive, ``MICRA-Net.tar.gz``, that holds the trained model zoos (``models/``)
and the training data (``datasets/``), and two Ilastik zoos as separate files.
This module fetches them with :mod:`pooch` (cache folder, retries, SHA-256
check, progress bar) and adds what pooch lacks: resuming an interrupted
download with an HTTP ``Range`` request (:class:`ResumableDownloader`) and
extracting an archive without trusting its paths (:func:`safe_extract`).

The cache, ``micranet_home()``, ends up like this::

    MICRA-Net/
        models/            ActinModelZoo.hdf5, CTCModelZoo.hdf5, ...   (from the archive)
        datasets/          training_01-04-19.hdf5, ...                 (from the archive)
        models-ilastik/    ActinModelZoo-ilastik.hdf5, CTCModelZoo-ilastik.hdf5
        .micranet-archive.json                                         (where it came from)

Environment variables
---------------------
MICRANET_HOME
    The cache folder (default: the OS cache folder for "micranet").
MICRANET_BASE_URL
    Replaces ``https://s3.valeria.science`` in every URL: a mirror, or a test server.
MICRANET_DOWNLOAD_RETRIES, MICRANET_DOWNLOAD_TIMEOUT
    How many times a broken download is retried (default 2) and how many
    seconds to wait for the server (default 60).

Examples
--------
>>> tree = fetch_published("models")                        # doctest: +SKIP
>>> published_path("models", "ActinModelZoo.hdf5")          # doctest: +SKIP
PosixPath('/home/me/.cache/micranet/MICRA-Net/models/ActinModelZoo.hdf5')
"""

import json
import os
import posixpath
import shutil
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pooch

from . import registry as _registry
from ..base.checks import finite_positive, non_negative_int
from ..base.errors import DownloadError, MicranetError
from ..base.files import write_atomic
from .http import GiveUp, ResumableDownloader, Retry, Unreachable
from .archives import safe_extract

__all__ = ["micranet_home", "base_url", "published_url", "fetch_published", "published_path", "download_file",
           "UnverifiedDownloadWarning"]

DEFAULT_BASE_URL = "https://s3.valeria.science"
BUCKET = "flclab-micranet"
ARCHIVE = "MICRA-Net.tar.gz"
ILASTIK = ("MICRA-Net/models-ilastik/ActinModelZoo-ilastik.hdf5",
           "MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5")
TREE = "MICRA-Net"
FOLDERS = {"models": "models", "datasets": "datasets", "ilastik": "models-ilastik"}
WHAT = ("all", "models", "datasets", "ilastik")
MARKER = ".micranet-archive.json"
CITATION = ("A. Bilodeau et al., Microscopy analysis neural network to solve detection, enumeration "
            "and segmentation from image-level annotations, Nature Machine Intelligence 4, 455-466 "
            "(2022), doi:10.1038/s42256-022-00472-w")
NOTE = ("Note: the MICRA-Net models and data sets are the work of their original authors "
        "(Bilodeau et al., FLClab, Université Laval), shared under their licence for "
        "non-commercial research use (https://github.com/FLClab/MICRA-Net). If you use them, "
        f"please cite: {CITATION}.")


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded but no published SHA-256 is recorded to check it against."""


def micranet_home():
    """The cache folder of the published files: ``$MICRANET_HOME`` or the OS cache folder.

    Returns
    -------
    Path
        e.g. ``~/.cache/micranet`` on Linux, ``~/Library/Caches/micranet`` on macOS.
    """
    value = os.environ.get("MICRANET_HOME")
    return Path(value).expanduser() if value else Path(pooch.os_cache("micranet"))


def base_url():
    """Scheme and host the published files are fetched from, without a trailing slash.

    ``$MICRANET_BASE_URL`` when set (a mirror, or ``http://127.0.0.1:PORT`` in
    tests), else ``https://s3.valeria.science``. Any path in it is kept as a prefix.
    """
    value = os.environ.get("MICRANET_BASE_URL", "").strip() or DEFAULT_BASE_URL
    if not value.startswith(("http://", "https://")):
        raise DownloadError(f"MICRANET_BASE_URL={value!r}: expected an http:// or https:// address, "
                            "e.g. http://127.0.0.1:8000")
    return value.rstrip("/")


def published_url(name):
    """Full URL of one published file, e.g. ``published_url("MICRA-Net.tar.gz")``."""
    return f"{base_url()}/{BUCKET}/{name}"


def _env_number(name, default, kind):
    value = os.environ.get(name, "").strip()
    try:
        return kind(value) if value else default
    except ValueError:
        raise DownloadError(f"{name}={value!r}: expected a number") from None


def _transfer_settings(retries, timeout):
    """Checked (retries, timeout): arguments first, then the environment, then 2 and 60 s."""
    retries = _env_number("MICRANET_DOWNLOAD_RETRIES", 2, int) if retries is None else retries
    timeout = _env_number("MICRANET_DOWNLOAD_TIMEOUT", 60.0, float) if timeout is None else timeout
    return non_negative_int("retries", retries), finite_positive("timeout", timeout)


_NOTE_SHOWN = False


def _show_note_once():
    global _NOTE_SHOWN
    if not _NOTE_SHOWN:
        print(NOTE, flush=True)
        _NOTE_SHOWN = True


class _ExtractArchive:
    """pooch processor: safely extract the downloaded archive into the published tree."""

    def __init__(self, tree, url, known_hash, keep_archive, progress):
        self.tree, self.url, self.known_hash = tree, url, known_hash
        self.keep_archive, self.progress = keep_archive, progress

    def __call__(self, fname, action, pooch_instance):
        archive = Path(fname)
        digest = self.known_hash.split(":")[-1] if self.known_hash else pooch.file_hash(str(archive))
        if not self.known_hash:
            _warn_unverified(archive.name, digest)
        try:
            safe_extract(archive, self.tree, root=TREE, progress=self.progress)
        except DownloadError:
            if not self.known_hash:  # possibly damaged or hostile: never reuse it
                archive.unlink(missing_ok=True)
            raise
        record = {"url": self.url, "sha256": digest, "verified": bool(self.known_hash),
                  "size": archive.stat().st_size}
        write_atomic(self.tree / MARKER, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
        if not self.keep_archive:
            archive.unlink()
        return str(self.tree)


_WARNED = set()


def _warn_unverified(name, digest):
    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(f"{name} is UNVERIFIED: this package has no published SHA-256 recorded for it yet, so a "
                  f"damaged or altered file would go unnoticed. Its SHA-256 is {digest}. Maintainers record "
                  "the published hashes with `python tools/record_hashes.py` (in the tutorial repository).",
                  UnverifiedDownloadWarning, stacklevel=2)


def _known_hash(name):
    digest = _registry.PUBLISHED.get(name, {}).get("sha256")
    return f"sha256:{digest}" if digest else None


@contextmanager
def _as_download_error(name, home):
    """Turn the internal and pooch failures of downloading `name` into a DownloadError."""
    url = published_url(name)
    try:
        yield
    except MicranetError:
        raise
    except Unreachable as err:
        manual = (f"download {DEFAULT_BASE_URL}/{BUCKET}/{name} on a connected computer and save it as "
                  f"{home / name}")
        if name == ARCHIVE:
            manual += (f" (it is extracted on the next run; or extract it yourself so that "
                       f"{home / TREE / 'models'} and {home / TREE / 'datasets'} hold the .hdf5 files)")
        raise DownloadError(f"{err}. To get the published files another way, either set MICRANET_BASE_URL "
                            "to a mirror holding the same paths (e.g. MICRANET_BASE_URL=http://my-mirror:8000), "
                            f"or {manual}.") from None
    except GiveUp as err:
        mirror = os.environ.get("MICRANET_BASE_URL")
        hint = "" if err.status != 404 else (
            f" Check that the mirror MICRANET_BASE_URL={mirror} holds the published paths." if mirror
            else " The authors may have moved the files: see https://github.com/FLClab/MICRA-Net.")
        raise DownloadError(f"{err}{hint}") from None
    except Retry as err:
        raise DownloadError(f"{err} The part already received is kept in {home}: "
                            "run the same command again to resume.") from None
    except ValueError as err:  # pooch: the SHA-256 does not match the registry
        raise DownloadError(f"{url}: {err} The downloaded file was deleted.") from None
    except OSError as err:
        raise DownloadError(f"{err.filename or home}: cannot write the download "
                            f"({err.strerror or err}).") from None


@contextmanager
def _quiet_pooch():
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _download_lock(home):
    """Let one process at a time download into `home` (POSIX only; elsewhere a no-op)."""
    home.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(home / ".download.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another download into {home} to finish...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download(name, home, progress, retries, timeout, processor=None):
    known = _known_hash(name)
    retries, timeout = _transfer_settings(retries, timeout)
    fetcher = pooch.create(path=home, base_url=f"{base_url()}/{BUCKET}/", registry={name: known},
                           retry_if_failed=max(0, int(retries)))
    downloader = ResumableDownloader(progress, timeout, extract_factor=1.0 if processor else 0.0,
                                     size_hint=_registry.PUBLISHED.get(name, {}).get("size"),
                                     before_download=_show_note_once)
    existed = (home / name).is_file()
    with _quiet_pooch(), _as_download_error(name, home):
        path = fetcher.fetch(name, processor=processor, downloader=downloader)
    if processor is None and known is None and not existed:
        _warn_unverified(posixpath.basename(name), pooch.file_hash(path))
    return Path(path)


def download_file(name, home=None, progress=True, *, retries=None, timeout=None):
    """Download one published file as is (no extraction) into the cache.

    Parameters
    ----------
    name : str
        Path under ``<base URL>/flclab-micranet/``, e.g. ``"MICRA-Net.tar.gz"``.
    home : str or Path, optional
        Cache folder; default :func:`micranet_home`.
    progress : bool
        Show a progress bar.
    retries, timeout : int, float, optional
        Retries after a broken download, and seconds to wait for the server
        (defaults: ``$MICRANET_DOWNLOAD_RETRIES`` or 2, ``$MICRANET_DOWNLOAD_TIMEOUT`` or 60).

    Returns
    -------
    Path
        ``home / name``, complete and checked against the registry when a hash is recorded.
    """
    if name not in _registry.PUBLISHED:
        raise DownloadError(f"name={name!r}: not a published file; expected one of {', '.join(_registry.PUBLISHED)}")
    home = Path(home).expanduser() if home else micranet_home()
    with _download_lock(home):
        return _download(name, home, progress, retries, timeout)


def _has_files(folder):
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def fetch_published(what="all", home=None, progress=True, *, retries=None, timeout=None, keep_archive=False):
    """Make sure the published files are in the cache; download what is missing.

    Parameters
    ----------
    what : {"all", "models", "datasets", "ilastik"}
        ``"models"`` and ``"datasets"`` both come from the one published
        archive (several GB); ``"ilastik"`` is the two Ilastik zoos; ``"all"`` is everything.
    home : str or Path, optional
        Cache folder; default :func:`micranet_home`.
    progress : bool
        Show progress bars.
    retries, timeout : int, float, optional
        See :func:`download_file`.
    keep_archive : bool
        Keep ``MICRA-Net.tar.gz`` after extracting it (default: delete it to save space).

    Returns
    -------
    Path
        The ``MICRA-Net`` folder holding ``models/``, ``datasets/`` and ``models-ilastik/``.

    Raises
    ------
    DownloadError
        No network, a server error, a hash mismatch, an unsafe archive, or a full disk;
        the message says what to do.
    """
    if what not in WHAT:
        raise DownloadError(f"what={what!r}: expected one of {', '.join(WHAT)}")
    home = Path(home).expanduser() if home else micranet_home()
    tree = home / TREE
    with _download_lock(home):
        for stale in home.glob(f".{TREE}.*.partial"):  # left by an extraction that was killed
            shutil.rmtree(stale, ignore_errors=True)
        wanted = ("models", "datasets") if what == "all" else (what,)
        if what != "ilastik" and not all(_has_files(tree / FOLDERS[kind]) for kind in wanted):
            extract = _ExtractArchive(tree, published_url(ARCHIVE), _known_hash(ARCHIVE), keep_archive, progress)
            _download(ARCHIVE, home, progress, retries, timeout, processor=extract)
            missing = [kind for kind in wanted if not _has_files(tree / kind)]
            if missing:
                found = sorted(entry.name for entry in tree.iterdir())
                raise DownloadError(f"{published_url(ARCHIVE)}: the archive has no {' or '.join(missing)} "
                                    f"folder; {tree} now holds: {', '.join(found) or 'nothing'}.")
        if what in ("all", "ilastik"):
            for name in ILASTIK:
                if not (home / name).is_file():
                    _download(name, home, progress, retries, timeout)
    return tree


def published_path(kind, name, home=None, progress=True):
    """Path of one published file, downloaded first if it is not in the cache.

    Parameters
    ----------
    kind : {"models", "datasets", "ilastik"}
        Which folder of the published tree.
    name : str
        File name, e.g. ``"ActinModelZoo.hdf5"`` or ``"training_01-04-19.hdf5"``.

    Returns
    -------
    Path
        e.g. ``micranet_home() / "MICRA-Net/models/ActinModelZoo.hdf5"``.
    """
    if kind not in FOLDERS:
        raise DownloadError(f"kind={kind!r}: expected one of {', '.join(FOLDERS)}")
    if not name or Path(name).name != name or name in (".", ".."):
        raise DownloadError(f"name={name!r}: expected a plain file name such as 'ActinModelZoo.hdf5'")
    home = Path(home).expanduser() if home else micranet_home()
    folder = home / TREE / FOLDERS[kind]
    if not (folder / name).is_file():
        fetch_published(kind, home, progress)
    if not (folder / name).is_file():
        found = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        raise DownloadError(f"{folder / name}: no such published file; {folder} holds: "
                            f"{', '.join(found) or 'nothing'}")
    return folder / name


