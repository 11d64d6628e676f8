"""Local runs on a GPU machine: submitit starts every local job with
CUDA_VISIBLE_DEVICES='' (it was asked for no GPUs), so the job itself takes
the GPUs of its slot. Seen on an H200: without this the first GPU run failed
its preflight ("torch sees none (CUDA_VISIBLE_DEVICES='')")."""
from __future__ import annotations

import pytest

from reproduce.backends import local
slot_devices = local.slot_devices


def test_each_slot_gets_its_own_gpus():
    ids = ["0", "1", "2", "3"]
    assert slot_devices(ids, 1, 0) == "0"
    assert slot_devices(ids, 1, 3) == "3"
    assert slot_devices(ids, 2, 1) == "2,3"


def test_the_callers_own_device_list_is_kept(monkeypatch):
    assert slot_devices(["5", "7"], 1, 1) == "7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local.local_gpu_ids() == ["5", "7"]


def test_a_slot_beyond_the_machines_gpus_is_refused():
    with pytest.raises(RuntimeError, match="slot 2 needs GPUs 2..2 of 2"):
        slot_devices(["0", "1"], 1, 2)
