"""Prometheus metrics, scraped over real HTTP and read with prometheus_client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.reporting.metrics import Metrics, start_metrics_server
from tests.test_status import make_config, make_sidecar

def parse(text: str) -> dict[str, float]:
    """Parse with prometheus_client's own parser (a malformed exposition raises); sample -> value."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


@pytest.fixture
def served(tmp_path: Path):
    cfg = make_config(tmp_path, metrics={"enabled": True, "bind": "127.0.0.1"})
    out = cfg.paths.outbox
    make_sidecar(out, "a", "queued")
    make_sidecar(out, "b", "queued")
    make_sidecar(out, "c", "rendering", progress=0.5)
    make_sidecar(out, "d", "done")
    metrics = Metrics(cfg)
    server = start_metrics_server(cfg, metrics, port=0)
    yield cfg, metrics, server
    server.close()


def test_scrape_reports_jobs_by_state_queue_depth_and_free_disk(served):
    _cfg, _metrics, server = served
    ctype, body = scrape(server.url)
    assert ctype.startswith("text/plain; version=")
    s = parse(body)
    assert s['lipsyncd_jobs{state="queued"}'] == 2
    assert s['lipsyncd_jobs{state="rendering"}'] == 1
    assert s['lipsyncd_jobs{state="done"}'] == 1
    assert s['lipsyncd_jobs{state="failed"}'] == 0
    assert s["lipsyncd_queue_depth"] == 2
    assert s['lipsyncd_disk_free_bytes{area="inbox"}'] > 0
    assert s['lipsyncd_disk_free_bytes{area="outbox"}'] > 0
    assert not any(k.startswith("lipsyncd_gpu_") for k in s)  # no CUDA in use here


def test_finished_jobs_feed_render_seconds_and_upload_bytes(served):
    _cfg, metrics, server = served
    done = {"state": "done", "timings": {"render_seconds": 42.0, "upload_seconds": 3.5},
            "outputs": [{"state": "done", "size": 1_000_000}, {"state": "done", "size": 500}]}
    metrics.observe_job(done)
    metrics.observe_job({"state": "failed", "timings": {"render_seconds": 700.0}, "outputs": []})
    metrics.observe_job({"state": "rendering", "timings": {"render_seconds": 1.0}})  # not finished: ignored
    s = parse(scrape(server.url)[1])
    assert s['lipsyncd_jobs_finished_total{state="done"}'] == 1
    assert s['lipsyncd_jobs_finished_total{state="failed"}'] == 1
    assert s["lipsyncd_upload_bytes_total"] == 1_000_500
    assert s["lipsyncd_upload_seconds_total"] == 3.5
    assert s["lipsyncd_render_seconds_count"] == 2
    assert s["lipsyncd_render_seconds_sum"] == 742
    assert s['lipsyncd_render_seconds_bucket{le="30.0"}'] == 0
    assert s['lipsyncd_render_seconds_bucket{le="60.0"}'] == 1
    assert s['lipsyncd_render_seconds_bucket{le="600.0"}'] == 1
    assert s['lipsyncd_render_seconds_bucket{le="1800.0"}'] == 2
    assert s['lipsyncd_render_seconds_bucket{le="+Inf"}'] == 2


def test_only_the_metrics_path_is_served(served):
    _cfg, _metrics, server = served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url.replace("/metrics", "/"), timeout=5)
    assert err.value.code == 404


def test_disabled_metrics_start_no_server(tmp_path):
    assert start_metrics_server(make_config(tmp_path)) is None


@pytest.mark.gpu
def test_gpu_memory_is_reported_while_cuda_is_in_use(served):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _cfg, _metrics, server = served
    held = torch.empty(64 * 1024**2, dtype=torch.uint8, device="cuda:0")  # 64 MiB of our own
    s = parse(scrape(server.url)[1])
    assert s['lipsyncd_gpu_memory_allocated_bytes{device="cuda:0"}'] >= held.numel()
    free, total = (s[f'lipsyncd_gpu_memory_{kind}_bytes{{device="cuda:0"}}'] for kind in ("free", "total"))
    assert 0 < free < total
