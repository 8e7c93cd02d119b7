"""One check per kind of value the entry points take, shared by all of them.

Every command (``micranet predict``, ``train``, ``make-dataset``, ``demo-data``)
and the library functions behind them check their numbers, names and output
folders with these helpers, so that a notebook and the command line refuse
the same values with the same one-line message: the argument's name, the
value, and what is wanted (:class:`~micranet_utils.base.errors.ArgumentError`).
Each helper returns the value converted to its type.
"""

import math
import numbers
import os
import re
import tempfile
from pathlib import Path

from .errors import ArgumentError

__all__ = ["whole_number", "positive_int", "non_negative_int", "finite", "finite_positive",
           "finite_non_negative", "fraction", "plain_name", "output_folder", "inside",
           "spreadsheet_text"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def whole_number(name, value, minimum=None):
    """`value` as an int; refuses booleans, fractions, NaN, text and values below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise ArgumentError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {number}")
    return number


def positive_int(name, value, minimum=1):
    """`value` as an int of at least `minimum` (default 1)."""
    return whole_number(name, value, minimum)


def non_negative_int(name, value):
    """`value` as an int of at least 0."""
    return whole_number(name, value, 0)


def finite(name, value):
    """`value` as a finite float (not NaN, not infinite)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def finite_positive(name, value):
    """`value` as a finite float above 0."""
    number = finite(name, value)
    if number <= 0:
        raise ArgumentError(f"{name} must be above 0, got {number:g}")
    return number


def finite_non_negative(name, value):
    """`value` as a finite float of at least 0."""
    number = finite(name, value)
    if number < 0:
        raise ArgumentError(f"{name} must be 0 or more, got {number:g}")
    return number


def fraction(name, value, *, zero=True, one=True):
    """`value` as a float in [0, 1] (``zero=False``: above 0; ``one=False``: below 1)."""
    number = finite(name, value)
    low, high = ("[" if zero else "("), ("]" if one else ")")
    if number < 0 or number > 1 or (number == 0 and not zero) or (number == 1 and not one):
        raise ArgumentError(f"{name} must be a fraction in {low}0, 1{high}, got {number:g}")
    return number


def plain_name(name, value):
    """`value` if it is a plain file-name part: letters, digits, ``.``, ``_``, ``-``, not starting with ``.``.

    Such a name stays inside the folder it is joined to (no ``/``, no ``..``)
    and means the same on every operating system.
    """
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value):
        raise ArgumentError(f"{name} must be a plain name (letters, digits, '.', '_', '-'; not starting "
                            f"with '.'), got {value!r}")
    return value


def inside(path, folder):
    """Whether `path` is `folder` or lies inside it (both resolved, links followed)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def output_folder(name, path, *, inputs=()):
    """Create the output folder `path` and prove it is writable, before any work is done.

    Parameters
    ----------
    name : str
        The argument, named in the messages (``"--output"``).
    path : str or Path
    inputs : sequence of (str, str or Path)
        ``(argument name, folder)`` pairs that the output must not be, nor lie
        inside: a command would otherwise read its own results, or write into
        a folder it promises only to read.

    Returns
    -------
    Path

    Raises
    ------
    ArgumentError
        The path is a file, lies inside an input folder, cannot be created,
        or a file cannot be created in it (read-only, full disk): a probe file
        is created and removed.
    """
    path = Path(path)
    for input_name, folder in inputs:
        if folder is not None and Path(folder).is_dir() and inside(path, folder):
            raise ArgumentError(f"{name} {path}: must be outside the {input_name} folder {folder} (it is "
                                "that folder or lies inside it)")
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"{name} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".micranet-write-probe.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ArgumentError(f"{name} {path}: cannot write there ({err.strerror or err})") from None
    return path


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text):
    """`text` made safe for spreadsheets: a leading ``= + - @``, tab or CR gets a ``'`` before it.

    A cell starting with one of these is run as a formula by Excel, LibreOffice
    and Google Sheets (CSV injection); OWASP's advice is to prefix it with a
    single quote, which spreadsheets show as text.
    """
    return "'" + text if text.startswith(_FORMULA_START) else text
