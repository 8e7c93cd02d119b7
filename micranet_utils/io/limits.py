"""How large a file may say it is: checked on the declared size, before anything is allocated.

A few hundred bytes of compressed TIFF or HDF5 can declare an image of
60000 x 60000 pixels or a dataset of terabytes; reading it would fill the
memory (or the machine would kill the process) long after the file looked
fine. Every reader of the package compares the size a file *declares* with
these limits first, and refuses with a message saying how to raise them.

========================  ===============  =====================================
limit                     default          raise it with
========================  ===============  =====================================
:data:`MAX_PIXELS`        2**30 values     ``max_pixels=`` of ``read_image``, or
                          (32768 x 32768)  the environment variable
                                           ``MICRANET_MAX_PIXELS``
:data:`MAX_DATASET_BYTES` 100 GiB          ``MICRANET_MAX_DATASET_BYTES``
========================  ===============  =====================================

Pixels are counted over everything that is read at once: all planes, channels
and colour samples of an image file, or one image (channels x height x width)
of a training file.
"""

import os

from ..base.errors import MicranetError

MAX_PIXELS = 1 << 30
"""int: most pixel values an image may declare (all planes and channels together)."""

MAX_DATASET_BYTES = 100 << 30
"""int: most bytes one HDF5 dataset may declare (shape x item size)."""

PIXELS_VARIABLE = "MICRANET_MAX_PIXELS"
DATASET_BYTES_VARIABLE = "MICRANET_MAX_DATASET_BYTES"


def _limit(variable, default, given=None):
    """`given`, else the environment variable, else `default`; a positive whole number."""
    raw = given if given is not None else os.environ.get(variable, "").strip() or default
    try:
        value = float(raw) if isinstance(raw, str) else raw
        if isinstance(value, bool) or value != int(value) or int(value) <= 0:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        where = f"{variable}={raw!r}" if given is None else f"limit {raw!r}"
        raise MicranetError(f"{where}: expected a positive whole number") from None
    return int(value)


def max_pixels(given=None):
    """The pixel limit: `given`, else ``$MICRANET_MAX_PIXELS``, else :data:`MAX_PIXELS`."""
    return _limit(PIXELS_VARIABLE, MAX_PIXELS, given)


def max_dataset_bytes():
    """The HDF5 dataset limit: ``$MICRANET_MAX_DATASET_BYTES``, else :data:`MAX_DATASET_BYTES`."""
    return _limit(DATASET_BYTES_VARIABLE, MAX_DATASET_BYTES)


def pixels_refused(declared, limit, described):
    """Message tail when `declared` pixel values exceed `limit`, else None.

    `described` says what was declared (``"60000 x 60000 pixels"``).
    """
    if declared <= limit:
        return None
    return (f"declares {described} ({declared:,} values), more than the limit of {limit:,}; "
            f"if the file is genuine, raise it with max_pixels= or the environment variable {PIXELS_VARIABLE}")


def bytes_refused(declared, limit):
    """Message tail when `declared` bytes exceed `limit`, else None."""
    if declared <= limit:
        return None
    return (f"declares {declared:,} bytes, more than the limit of {limit:,}; "
            f"if the file is genuine, raise it with the environment variable {DATASET_BYTES_VARIABLE}")
