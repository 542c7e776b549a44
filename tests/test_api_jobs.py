"""The HTTP API end to end: ``lipsyncd serve`` and ``lipsyncd run`` as two processes on one
share, a real SeaweedFS, real HTTP clients. Submit (upload, URL, template library), follow
the events to done, open the permanent link, delete, and the callback a workflow receives.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import httpx
import pytest

from tests.api_harness import MediaServer, Receiver, make_stack
from tests.daemon_harness import wait_until

pytestmark = pytest.mark.xdist_group("api-jobs")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store, media):
    with make_stack(tmp_path_factory.mktemp("api-jobs"), store, media) as s:
        yield s



def test_upload_job_streams_events_to_done_and_its_permanent_link_serves_the_video(stack):
    r = stack.upload_job("welcome")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["name"] == "welcome" and body["state"] == "waiting"
    assert body["status_url"] == f"{stack.url}/api/v1/jobs/welcome"
    assert body["events_url"] == f"{stack.url}/api/v1/jobs/welcome/events"

    events = stack.follow("welcome")
    states = [e["state"] for e in events]
    assert states[0] == "waiting" and states[-1] == "done", states
    order = ["waiting", "queued", "rendering", "uploading", "done"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states  # never backwards
    assert all(a != b for a, b in zip(events, events[1:]))  # an event is a change

    doc = httpx.get(body["status_url"], headers=stack.h).json()
    out = doc["outputs"][0]
    assert doc["state"] == "done" and out["link"].startswith(f"{stack.url}/l/")
    # the permanent link needs no key: it answers with a fresh presigned URL of the object
    hop = httpx.get(out["link"])
    assert hop.status_code == 307 and hop.headers["cache-control"] == "no-store"
    assert hop.headers["location"].startswith(stack.store.endpoint)
    video = httpx.get(out["link"], follow_redirects=True)
    assert video.status_code == 200
    assert hashlib.sha256(video.content).hexdigest() == out["sha256"]
    # the inbox holds nothing of the job any more (the job's folder went with the claim)
    assert not [p for p in stack.share.inbox.iterdir() if not p.name.startswith(".")]
    # and the listing shows it
    listed = httpx.get(f"{stack.url}/api/v1/jobs", headers=stack.h, params={"state": "done"}).json()
    assert "welcome" in [j["job"] for j in listed["jobs"]]


def test_job_by_url_and_template_library_calls_back_with_what_a_workflow_needs(stack, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(stack.media.audio, folder / "tts-output.wav")
    files, hook = MediaServer(folder), Receiver()
    try:
        r = stack.submit(json={"audio_url": files.url("tts-output.wav"), "template_name": "anna.mp4",
                               "name": "from-dify", "callback_url": hook.url})
        assert r.status_code == 202, r.text
        assert stack.follow("from-dify")[-1]["state"] == "done"
        wait_until(lambda: hook.bodies, 30, "the callback")
    finally:
        files.close()
        hook.httpd.shutdown()
    (payload,) = hook.bodies
    assert payload["name"] == "from-dify" and payload["state"] == "done" and payload["error_message"] is None
    assert payload["link"].startswith(f"{stack.url}/l/") and httpx.get(payload["link"]).status_code == 307
    doc = stack.share.sidecar("from-dify")
    assert doc["inputs"]["audio"]["name"].endswith("tts-output.wav")
    # a library template is read in place, never moved
    assert (Path(stack.daemon.config).parent / "library" / "anna.mp4").exists()


def test_a_workflow_sends_text_and_subtitles_by_url_and_gets_a_square_captioned_video(stack, tmp_path):
    """What a Dify workflow does: JSON only -- text to speak, a library template, subtitles
    by URL, a shape."""
    import shutil as _shutil

    import av

    if _shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it with apt)")
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "captions.vtt").write_text("WEBVTT\n\n00:00.100 --> 00:01.000\nHello\n", encoding="utf-8")
    files = MediaServer(folder)
    try:
        r = stack.submit(json={"text": "Hello there, and welcome.", "template_name": "anna.mp4", "name": "spoken",
                               "subtitle_url": files.url("captions.vtt"), "aspect": "1:1"})
        assert r.status_code == 202, r.text
        doc = stack.follow("spoken")[-1]
    finally:
        files.close()
    assert doc["state"] == "done", doc.get("error")
    assert doc["options"]["aspect"] == "1:1" and doc["options"]["text"] == "Hello there, and welcome."
    out = doc["outputs"][0]
    assert out["width"] == out["height"]
    video = tmp_path / "spoken.mp4"
    video.write_bytes(httpx.get(out["url"]).content)
    with av.open(str(video)) as c:
        (cue,) = [p for p in c.demux(c.streams.subtitles[0]) if p.size > 2]
    assert bytes(cue)[2:].decode() == "Hello" and cue.pts == 100


def test_a_name_in_use_gets_a_suffix_and_nothing_is_overwritten(stack):
    names = [stack.upload_job("twice").json()["name"] for _ in range(2)]
    assert names == ["twice", "twice-2"]
    docs = stack.share.wait_for(names, timeout=60, daemons=[stack.daemon])
    assert all(d["state"] == "done" for d in docs.values())
    assert docs["twice"]["id"] != docs["twice-2"]["id"]


def test_deleting_a_finished_job_deletes_its_video_and_the_link_answers_410(stack):
    name = stack.upload_job("short-lived").json()["name"]
    doc = stack.follow(name)[-1]
    link, key = doc["outputs"][0]["link"], doc["outputs"][0]["key"]
    assert key in stack.store.objects()

    r = httpx.delete(f"{stack.url}/api/v1/jobs/{name}", headers=stack.h)
    assert r.status_code == 200 and r.json() == {"name": name, "action": "deleted", "videos_deleted": 1}
    assert key not in stack.store.objects()
    gone = httpx.get(link)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    after = stack.share.sidecar(name)
    assert after["state"] == "expired" and after["outputs"][0]["link"] is None
    # deleting again changes nothing
    again = httpx.delete(f"{stack.url}/api/v1/jobs/{name}", headers=stack.h)
    assert again.json()["action"] == "already_deleted"


def test_unknown_jobs_and_forged_links_answer_404_json(stack):
    r = httpx.get(f"{stack.url}/api/v1/jobs/no-such-job", headers=stack.h)
    assert r.status_code == 404 and r.json()["error"] == {"code": "not_found", "message": "no job 'no-such-job'",
                                                           "field": "name"}
    assert httpx.get(f"{stack.url}/api/v1/jobs/no-such-job/events", headers=stack.h).status_code == 404
    # a token made for another key, or altered by one character, is not a link
    name = stack.upload_job("forgery").json()["name"]
    link = stack.follow(name)[-1]["outputs"][0]["link"]
    body, tag = link.rsplit("/", 1)[1].split(".")
    other = "dmlkZW9zL290aGVyLm1wNA"  # base64url of "videos/other.mp4"
    assert httpx.get(f"{stack.url}/l/{other}.{tag}").status_code == 404
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    assert httpx.get(f"{stack.url}/l/{body}.{flipped}").status_code == 404


def test_readiness_and_metrics(stack):
    ready = httpx.get(f"{stack.url}/readyz", headers=stack.h)
    assert ready.status_code == 200 and ready.json()["checks"]["storage"]["ok"] is True
    metrics = httpx.get(f"{stack.url}/metrics", headers=stack.h)
    assert metrics.status_code == 200 and "lipsyncd_jobs" in metrics.text
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
