"""Several renders at once: one per GPU listed in render.devices, or render.workers on one device."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lipsync.device import DeviceUnavailableError

from daemon.config import ConfigError, from_dict
from daemon.pipeline.slots import render_slots
from daemon.reporting.metrics import Metrics
from tests.daemon_harness import Daemon, Media, Share


def cfg_with(tmp_path: Path, **render):
    return from_dict({"render": render}, base=tmp_path)


def test_one_slot_per_listed_gpu_and_all_means_every_gpu(tmp_path):
    slots = render_slots(cfg_with(tmp_path, devices=["cuda:0", "cuda:1"]), cuda_count=2)
    assert [s.device for s in slots] == ["cuda:0", "cuda:1"]
    assert [s.device for s in render_slots(cfg_with(tmp_path, devices=["all"]), cuda_count=4)] == \
        ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(DeviceUnavailableError, match="cuda:1, but this host has 1 CUDA device"):
        render_slots(cfg_with(tmp_path, devices=["cuda:0", "cuda:1"]), cuda_count=1)


def test_without_a_device_list_workers_default_to_what_the_cores_allow(tmp_path):
    assert len(render_slots(cfg_with(tmp_path, device="cpu"), cuda_count=0, cpu_count=2)) == 1
    assert len(render_slots(cfg_with(tmp_path, device="cpu"), cuda_count=0, cpu_count=16)) == 4
    assert len(render_slots(cfg_with(tmp_path, device="auto"), cuda_count=1, cpu_count=16)) == 1  # one GPU
    assert len(render_slots(cfg_with(tmp_path, device="auto"), cuda_count=0, cpu_count=8)) == 2
    assert len(render_slots(cfg_with(tmp_path, device="cpu", workers=3), cuda_count=0, cpu_count=2)) == 3
    # devices=["all"] on a host without a GPU: the CPU workers
    assert [s.device for s in render_slots(cfg_with(tmp_path, devices=["all"], device="cpu"), cuda_count=0,
                                           cpu_count=8)] == ["cpu", "cpu"]


def test_bad_device_lists_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        cfg_with(tmp_path, devices=["gpu0", "cuda:1", "cuda:1"])
    assert "'gpu0' is not 'cuda:N'" in str(err.value) and "listed twice" in str(err.value)


def test_metrics_say_which_slot_is_busy(tmp_path):
    metrics = Metrics(cfg_with(tmp_path))
    metrics.slots = lambda: [("cuda:0", "talk"), ("cuda:1", None)]
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'lipsyncd_render_slot_busy{slot="cuda:0"} 1.0' in text
    assert 'lipsyncd_render_slot_busy{slot="cuda:1"} 0.0' in text


def test_two_workers_render_two_jobs_at_once(tmp_path, store):
    media = Media(tmp_path / "media", seconds=4.0)
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "pair", extra={"render": {"workers": 2, "chunk_frames": 8}})
    names = ["one", "two", "three", "four"]
    overlap = 0
    with daemon.start(failpoints="render_progress=sleep:0.2"):
        for n in names:
            share.drop_job(n, media)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            docs = share.sidecars()
            overlap = max(overlap, sum(1 for d in docs.values() if d["state"] == "rendering"))
            if len(docs) == 4 and all(d["state"] == "done" for d in docs.values()):
                break
            daemon.check_alive()
            time.sleep(0.05)
    docs = share.sidecars()
    assert sorted(docs) == sorted(names) and all(d["state"] == "done" for d in docs.values())
    assert overlap == 2  # two at once, never more
    assert {d["device"] for d in docs.values()} == {"cpu"}
