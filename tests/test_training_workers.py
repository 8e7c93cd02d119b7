"""The default number of DataLoader workers of a training run."""

import os

import pytest

from micranet_utils.train.loop import default_num_workers


@pytest.mark.parametrize("cores, world, expected", [
    (1, 1, 0), (2, 1, 0),            # no core to spare: crops are read by the training process
    (3, 1, 2), (4, 1, 3), (5, 1, 4), (64, 1, 4),
    (8, 4, 0), (16, 4, 3), (64, 8, 4),   # torchrun: the cores are shared between the processes
])
def test_default_workers_follow_the_cores_each_process_has(monkeypatch, cores, world, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_num_workers(world) == expected


def test_default_workers_without_affinity_use_the_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_num_workers() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: None)   # unknown: assume one core
    assert default_num_workers() == 0
