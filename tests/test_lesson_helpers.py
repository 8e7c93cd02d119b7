"""The small helpers the lessons share (micranet_utils.tutorial.lessons)."""

import ctypes
import sys

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

