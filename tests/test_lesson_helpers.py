"""The small helpers the lessons share (micranet_utils.tutorial.lessons)."""

import ctypes
import sys

import numpy as np
import pytest
import torch

from micranet_utils.base.devices import pick_device
from micranet_utils.tutorial import lessons


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), (" On ", True), ("0", False),
                                             ("", False), ("no", False)])
def test_fast_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("MICRANET_FAST", value)
    assert lessons.is_fast() is expected


def test_work_dir_follows_the_environment_and_is_created(monkeypatch, tmp_path):
    target = tmp_path / "a b" / "wörk"
    monkeypatch.setenv("MICRANET_WORKDIR", str(target))
    assert lessons.work_dir() == target.resolve() and target.is_dir()


def test_pick_device_resolves_auto_and_refuses_a_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_dataset_choice_names_the_allowed_values():
    assert lessons.check_dataset_choice("Demo") == "demo"
    with pytest.raises(ValueError, match="'ctc'.*demo"):
        lessons.check_dataset_choice("ctc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the GNU C library setting is Linux only")
def test_return_freed_memory_applies_on_linux():
    try:
        ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        pytest.skip("not the GNU C library")
    assert lessons.return_freed_memory() is True


def test_return_freed_memory_does_nothing_without_glibc(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert lessons.return_freed_memory() is False


@pytest.mark.parametrize("value, expected", [("1", True), (" Yes ", True), ("on", True), ("TRUE", True),
                                             ("0", False), ("off", False), ("No", False), ("", False)])
def test_fast_mode_reads_the_usual_words(monkeypatch, value, expected):
    monkeypatch.setenv("MICRANET_FAST", value)
    assert lessons.is_fast() is expected


def test_fast_mode_refuses_a_value_it_does_not_understand(monkeypatch):
    monkeypatch.setenv("MICRANET_FAST", "fast")
    with pytest.raises(ValueError, match="MICRANET_FAST='fast' is not understood"):
        lessons.is_fast()
    monkeypatch.delenv("MICRANET_FAST")
    assert lessons.is_fast() is False



def test_setup_chooses_and_prints_in_one_block(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    try:
        chosen = lessons.setup("Demo", fast=True, device="auto", threads=1, seed=3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    dataset, fast, device, work = chosen
    assert (dataset, fast, device) == ("demo", True, torch.device("cpu"))
    assert work == (tmp_path / "work").resolve() and work.is_dir()
    printed = capsys.readouterr().out
    for line in ("data set     demo", "fast mode    on", "device       cpu, 1 threads", "random seed  3"):
        assert line in printed, printed
    assert "memory" not in printed            # not asked for, and outside a notebook it does nothing


def test_setup_seeds_torch_and_numpy(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path))
    lessons.setup(device="cpu", seed=5, show=False)
    first = torch.rand(3), np.random.rand(3)
    lessons.setup(device="cpu", seed=5, show=False)
    assert torch.equal(first[0], torch.rand(3)) and np.array_equal(first[1], np.random.rand(3))


def test_setup_reads_fast_mode_from_the_environment_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MICRANET_FAST", "1")
    assert lessons.setup(device="cpu", show=False).fast is True


def test_setup_refuses_a_data_set_the_lesson_cannot_use(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path))
    with pytest.raises(ValueError, match="'actin'.*demo"):
        lessons.setup("actin", allowed=("demo",), show=False)


def test_setup_hands_memory_back_after_every_cell_in_a_notebook(monkeypatch, tmp_path):
    IPython = pytest.importorskip("IPython")
    from IPython.core.events import EventManager, available_events

    class Shell:
        events = EventManager(None, available_events)

    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path))
    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell)
    trims = []
    monkeypatch.setattr(lessons, "trim_freed_memory", lambda: trims.append(1) or True)
    for _ in range(2):                                  # running the setup cell again adds no second hook
        lessons.setup(device="cpu", lean_memory=True, show=False)
    Shell.events.trigger("post_run_cell", None)
    assert trims == [1]
