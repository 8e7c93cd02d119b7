"""Small helpers the lessons share: where they write, fast mode, device choice.

Every lesson starts with a ``parameters`` cell (``DATASET``, ``FAST``,
``DEVICE``); these functions turn those into concrete paths and settings so
that the same lesson runs in JupyterLab, on Binder, on Colab and headless in CI.
"""

import os
from pathlib import Path


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def is_fast():
    """True when the environment asks for fast mode (``MICRANET_FAST``).

    Fast mode shrinks the work (fewer images, fewer epochs) so that CI stays
    within its time budget; it never removes an assertion. ``1``, ``true``,
    ``yes`` and ``on`` switch it on; ``0``, ``false``, ``no``, ``off`` and an
    unset or empty variable leave it off (case and spaces ignored).

    Raises
    ------
    ValueError
        For any other value, rather than guessing what was meant.
    """
    value = os.environ.get("MICRANET_FAST", "").strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"MICRANET_FAST={os.environ['MICRANET_FAST']!r} is not understood; "
                     "use 1 (fast mode) or 0 (full lessons)")


def work_dir(create=True):
    """Folder where lessons keep what they generate and share.

    ``MICRANET_WORKDIR`` when set (``make tutorial`` and ``make test`` set it to
    ``outputs/work``); otherwise ``./micranet-work`` beside the notebook.
    Lesson 01 writes the demo data there, lesson 03 the trained model, and
    later lessons reuse them (or regenerate them when opened alone).

    Returns
    -------
    Path
    """
    folder = Path(os.environ.get("MICRANET_WORKDIR", "micranet-work")).expanduser().resolve()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_dataset_choice(dataset, allowed=("demo", "actin")):
    """Validate a lesson's ``DATASET`` parameter; returns it lower-cased."""
    choice = str(dataset).lower()
    if choice not in allowed:
        raise ValueError(f"DATASET = {dataset!r} is not available in this lesson; choose one of {allowed}")
    return choice


def in_colab():
    """True inside Google Colab."""
    import sys

    return "google.colab" in sys.modules


def return_freed_memory():
    """Hand the memory the process has freed back to the system, now and from now on.

    Training and evaluating several networks allocates and frees temporary arrays
    of hundreds of MB. By default the GNU C library keeps such freed memory inside
    the process for later use, so the process's memory (what Binder and the
    operating system count) keeps the high-water mark of every step. This call
    returns what is free now, and from then on returns blocks of 1 MB or more as
    soon as they are freed. Call it after training, before evaluation: allocating
    large blocks becomes slower, which training would feel. Lesson 06 then stays
    within 2 GB.

    Returns
    -------
    bool
        True where the setting was applied (Linux with the GNU C library);
        False elsewhere, where nothing changes.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)                              # what is free now
        return bool(libc.mallopt(-3, 1 << 20))          # -3: M_MMAP_THRESHOLD, in bytes
    except (OSError, AttributeError):                   # not Linux, or not the GNU C library
        return False
