"""Webhook notifications, received by a real HTTP server on localhost."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon import config as config_mod
from tests import outbox_files as sidecar
from daemon.reporting.notify import Notifier, Webhook, message_text

SECRET = "k3y-0f-the-r0b0t"


class Receiver:
    """A local webhook endpoint. Paths choose behaviour: /ok, /flaky (two 500s, then 200),
    /down (always 500), /gone (404), /slow (sleeps past the client timeout), /robot-err."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                with receiver.lock:
                    n = receiver.hits[path] = receiver.hits.get(path, 0) + 1
                    receiver.requests.append({"path": path, "query": self.path.partition("?")[2],
                                              "headers": dict(self.headers), "body": json.loads(body)})
                status, answer = 200, b'{"errcode": 0, "errmsg": "ok"}'
                if path == "/down" or (path == "/flaky" and n <= 2):
                    status = 500
                elif path == "/gone":
                    status = 404
                elif path == "/slow":
                    time.sleep(1.5)
                elif path == "/robot-err":
                    answer = b'{"errcode": 310000, "errmsg": "keywords not in content"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def done_doc(**options) -> dict:
    doc = sidecar.new_document(job="talk", job_id="talk-20250101T000000Z-ab12", host="gpu-01",
                               inputs={"audio": {"name": "talk.wav", "size": 10},
                                       "templates": [{"name": "face.mp4", "size": 20}]},
                               engine="warp", options=options)
    doc["state"] = "done"
    doc["progress"] = 1.0
    doc["outputs"] = [{
        "name": "talk.mp4", "template": "face.mp4", "state": "done", "engine": "warp",
        "url": "https://videos.example.com/lipsyncd/videos/talk.mp4?X-Amz-Signature=abc",
        "url_expires_at": "2030-01-08T10:00:00Z", "bucket": "lipsyncd", "key": "videos/talk.mp4",
        "size": 1234, "content_type": "video/mp4",
    }]
    assert sidecar.validate(doc) == []
    return doc


def failed_doc(**options) -> dict:
    doc = done_doc(**options)
    doc["state"] = "failed"
    doc["outputs"] = []
    doc["error"] = {"code": "no_face", "message": "face.mp4: no usable face in any frame"}
    assert sidecar.validate(doc) == []
    return doc


def fast_notifier(hooks, **kw) -> Notifier:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("retries", 3)
    return Notifier(hooks, backoff=0.05, **kw)


def test_json_webhook_receives_the_sidecar_plus_flat_fields_for_workflows(receiver):
    doc = done_doc()
    doc["outputs"][0]["link"] = "https://lipsync.example.com/l/abc.def"
    n = fast_notifier([Webhook(receiver.url("/ok"))])
    n(doc)
    n.close()
    (req,) = receiver.requests
    body = req["body"]
    assert {k: v for k, v in body.items() if k in doc} == doc  # the sidecar, unchanged
    assert body["name"] == doc["job"] and body["state"] == "done"
    assert body["link"] == "https://lipsync.example.com/l/abc.def"  # the permanent link comes first
    assert body["links"] == [o.get("link") or o["url"] for o in doc["outputs"]]
    assert body["error_message"] is None
    assert req["headers"]["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("fmt", ["wecom", "dingtalk"])
def test_chat_robot_gets_video_ready_text_with_the_link(receiver, fmt):
    doc = done_doc()
    n = fast_notifier([Webhook(receiver.url("/robot"), fmt)])
    n(doc)
    n.close()
    (body,) = receiver.bodies("/robot")
    assert body["msgtype"] == "text"
    content = body["text"]["content"]
    assert content.startswith("video ready: talk.mp4 https://videos.example.com/")
    assert doc["outputs"][0]["url"] in content
    assert "2030-01-08 10:00:00 UTC" in content


def test_failed_job_text_says_it_failed_and_why():
    text = message_text(failed_doc())
    assert text == "video failed: talk: face.mp4: no usable face in any frame"


def test_events_filter_and_per_job_callback(receiver):
    hooks = [Webhook(receiver.url("/only-done"), "wecom", ("done",)),
             Webhook(receiver.url("/only-failed"), "dingtalk", ("failed",))]
    n = fast_notifier(hooks)
    n(failed_doc(callback_url=receiver.url("/callback")))
    n.close()
    assert receiver.bodies("/only-done") == []
    assert len(receiver.bodies("/only-failed")) == 1
    (cb,) = receiver.bodies("/callback")
    assert cb["state"] == "failed" and cb["error"]["code"] == "no_face"  # callbacks get the sidecar


def test_unfinished_job_is_not_announced(receiver):
    doc = done_doc()
    doc["state"] = "rendering"
    n = fast_notifier([Webhook(receiver.url("/ok"))])
    n(doc)
    n.close()
    assert receiver.requests == []


def test_flaky_webhook_is_retried_until_it_accepts(receiver):
    n = fast_notifier([Webhook(receiver.url("/flaky"))], retries=3)
    with capture_logs() as logs:
        n(done_doc())
        n.close()
    assert receiver.hits["/flaky"] == 3
    assert [e["event"] for e in logs].count("webhook attempt failed") == 2
    assert any(e["event"] == "webhook delivered" and e["attempt"] == 3 for e in logs)


def test_failing_webhooks_never_block_or_raise_and_others_still_get_the_message(receiver):
    hooks = [Webhook(receiver.url("/down")), Webhook(receiver.url("/slow")),
             Webhook("http://127.0.0.1:9/refused"), Webhook(receiver.url("/ok"), "wecom")]
    n = fast_notifier(hooks, retries=2, timeout=0.5)
    with capture_logs() as logs:
        t0 = time.monotonic()
        n(done_doc())  # returns at once: delivery happens in the background
        # delivering in the caller would take >= 1.5 s (/slow: 3 attempts x 0.5 s timeout);
        # the bound is loose so a loaded CI machine does not make it flaky
        assert time.monotonic() - t0 < 1.0
        n.close()
    assert receiver.hits["/down"] == 3  # first attempt + 2 retries
    assert len(receiver.bodies("/ok")) == 1
    reasons = sorted(e["reason"] for e in logs if e["event"] == "webhook failed")
    assert reasons == ["Connection refused", "HTTP 500", "timed out"]


def test_client_error_is_not_retried(receiver):
    n = fast_notifier([Webhook(receiver.url("/gone"))], retries=5)
    n(done_doc())
    n.close()
    assert receiver.hits["/gone"] == 1


def test_robot_error_code_counts_as_failure(receiver):
    n = fast_notifier([Webhook(receiver.url("/robot-err"), "wecom")], retries=1)
    with capture_logs() as logs:
        n(done_doc())
        n.close()
    assert receiver.hits["/robot-err"] == 2
    (fail,) = [e for e in logs if e["event"] == "webhook failed"]
    assert "310000" in fail["reason"]


def test_webhook_key_never_reaches_the_logs(receiver):
    url = receiver.url(f"/robot-err?key={SECRET}")
    n = fast_notifier([Webhook(url, "wecom")], retries=1)
    with capture_logs() as logs:
        n(done_doc(callback_url=receiver.url(f"/down?token={SECRET}")))
        n.close()
    assert any(r["query"] == f"key={SECRET}" for r in receiver.requests)  # it was used...
    assert logs and SECRET not in repr(logs)  # ...but never logged


def test_from_config_reads_webhooks_timeout_and_retries(tmp_path: Path, receiver):
    cfg = config_mod.from_dict({"notify": {"timeout": "2s", "retries": 1, "webhooks": [
        {"url": receiver.url("/ok"), "format": "dingtalk", "events": ["done"]}]}}, base=tmp_path)
    n = Notifier.from_config(cfg)
    assert (n.timeout, n.retries) == (2.0, 1)
    n(done_doc())
    n.close()
    assert receiver.bodies("/ok")[0]["text"]["content"].startswith("video ready: talk.mp4 ")


def test_a_wecom_robot_gets_chinese_text_when_notify_language_says_so(tmp_path: Path, receiver):
    cfg = config_mod.from_dict({"notify": {"language": "zh-CN", "webhooks": [
        {"url": receiver.url("/ok"), "format": "wecom"}, {"url": receiver.url("/json"), "format": "json"}]}},
        base=tmp_path)
    n = Notifier.from_config(cfg)
    n(done_doc())
    n.close()
    url = done_doc()["outputs"][0]["url"]
    assert receiver.bodies("/ok")[0]["text"]["content"].startswith(f"视频已生成：talk.mp4 {url}（链接有效期至 ")
    body = receiver.bodies("/json")[0]
    assert body["text"].startswith("视频已生成") and body["state"] == "done"  # fields and states stay as they are


# --------------------------------------------------------------------------- in the real daemon


def test_daemon_announces_jobs_and_a_dead_webhook_fails_nothing(tmp_path, receiver):
    """A real daemon renders a good and a broken job; webhooks hear of both, one of them
    always answers 500, and both jobs still end as they should, with metrics counting them."""
    import urllib.request

    from tests.daemon_harness import Daemon, Media, Share, Store, free_port

    store = Store(tmp_path / "store").start()
    try:
        share = Share(tmp_path / "share")
        media = Media(tmp_path / "media", seconds=0.4, size=(32, 32))
        port = free_port()
        hooks = [{"url": receiver.url("/down"), "format": "json"},
                 {"url": receiver.url(f"/robot?key={SECRET}"), "format": "wecom"}]
        daemon = Daemon(tmp_path, share, store, "notify-host", extra={
            "notify": {"webhooks": hooks, "timeout": 2, "retries": 1},
            "metrics": {"enabled": True, "port": port}})
        with daemon.start():
            share.drop_job("hello", media)
            share.drop("broken.mp4", b"this is not a video")
            share.drop("broken.wav", media.audio)
            docs = share.wait_for(["hello", "broken"], timeout=90, daemons=[daemon])
            assert docs["hello"]["state"] == "done" and docs["broken"]["state"] == "failed"
            texts = wait_until_received(receiver, "/robot", 2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
        url = docs["hello"]["outputs"][0]["url"]
        assert any(t.startswith(f"video ready: hello.mp4 {url} (link valid until ") for t in texts)
        assert any(t.startswith("video failed: broken: ") for t in texts)
        assert receiver.hits["/down"] == 4  # two jobs, each tried twice, and neither job failed because of it
        assert 'lipsyncd_jobs_finished_total{state="done"} 1' in metrics
        assert 'lipsyncd_jobs_finished_total{state="failed"} 1' in metrics
        assert SECRET not in daemon.log_text()
        assert "webhook failed" in daemon.log_text()
    finally:
        store.stop()


def wait_until_received(receiver: Receiver, path: str, count: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bodies = receiver.bodies(path)
        if len(bodies) >= count:
            return [b["text"]["content"] for b in bodies]
        time.sleep(0.1)
    raise AssertionError(f"{path} received {len(receiver.bodies(path))} message(s), expected {count}")
