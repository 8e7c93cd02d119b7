"""Small helpers the lessons share: where they write, fast mode, device choice.

Every lesson starts with a ``parameters`` cell (``DATASET``, ``FAST``,
``DEVICE``) and then calls :func:`setup` once, which turns those into
concrete settings (device, threads, work folder, seeds, memory) and prints
them, so that the same lesson runs in JupyterLab, on Binder, on Colab and
headless in CI, and its bookkeeping stays out of the lesson.
"""

import os
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..base.devices import pick_device


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


def trim_freed_memory():
    """Hand the memory this process has freed back to the system, now; True where it could.

    Unlike :func:`return_freed_memory` it changes no allocator setting, so it
    never slows later allocations down (Linux with the GNU C library; elsewhere
    it does nothing and returns False).
    """
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):                   # not Linux, or not the GNU C library
        return False


class LessonSetup(NamedTuple):
    """What :func:`setup` chose: ``dataset, fast, device, work = setup(...)``."""

    dataset: str
    fast: bool
    device: torch.device
    work: Path


def _after_every_cell(callback):
    """Run `callback()` after every notebook cell; False outside IPython (scripts, tests)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    for registered in list(shell.events.callbacks["post_run_cell"]):
        if getattr(registered, "__name__", "") == "_micranet_trim":
            shell.events.unregister("post_run_cell", registered)    # setup() run twice: one hook

    def _micranet_trim(result=None):
        callback()

    shell.events.register("post_run_cell", _micranet_trim)
    return True


def setup(dataset="demo", fast=None, device="auto", *, allowed=("demo", "actin"), seed=0, threads=4,
          lean_memory=False, show=True):
    """A lesson's bookkeeping in one call, printed in one short block.

    Checks the ``DATASET`` choice, resolves the device, caps PyTorch's CPU
    threads, creates the work folder, seeds PyTorch, NumPy and Python, and,
    with `lean_memory`, hands freed memory back to the system after every
    notebook cell.

    Parameters
    ----------
    dataset : str
        The lesson's ``DATASET`` parameter, one of `allowed`.
    fast : bool, optional
        The lesson's ``FAST`` parameter; default :func:`is_fast`.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"`` ...: see :func:`micranet_utils.base.devices.pick_device`.
    allowed : tuple of str
        The data sets this lesson can use.
    seed : int
        Seed of ``torch``, ``numpy.random`` and ``random``.
    threads : int
        At most this many PyTorch threads on the CPU (fewer when the machine has fewer).
    lean_memory : bool
        After every cell, return what the process freed to the system
        (:func:`trim_freed_memory`): the lessons that train and evaluate several
        networks then keep less memory between steps. Does nothing outside a
        notebook or off Linux.
    show : bool
        Print what was chosen.

    Returns
    -------
    LessonSetup
        ``(dataset, fast, device, work)``.

    Examples
    --------
    >>> DATASET, FAST, device, WORK = setup("demo", fast=True, device="cpu", show=False)
    >>> DATASET, FAST, device.type
    ('demo', True, 'cpu')
    """
    dataset = check_dataset_choice(dataset, allowed)
    fast = is_fast() if fast is None else bool(fast)
    device = pick_device(device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(int(threads), torch.get_num_threads())))
    work = work_dir()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    trimming = lean_memory and _after_every_cell(trim_freed_memory)
    if show:
        where = os.path.relpath(work) if work.is_relative_to(Path.cwd().parent) else str(work)
        compute = f"{device.type}, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
        print(f"data set     {dataset}\n"
              f"fast mode    {'on: fewer images and epochs, same steps' if fast else 'off'} (MICRANET_FAST)\n"
              f"device       {compute}\n"
              f"work folder  {where} (MICRANET_WORKDIR)\n"
              f"random seed  {seed} (torch, numpy, random)"
              + ("\nmemory       freed memory handed back to the system after every cell" if trimming else ""))
    return LessonSetup(dataset, fast, device, work)
