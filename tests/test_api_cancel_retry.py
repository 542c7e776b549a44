"""Cancel and retry over HTTP, against a daemon whose renders are slowed down (a failpoint
sleeps at every progress step), whose claims pause between moving a job's files and
writing its record (where a retried job must not read as its old failure), and whose
first render fails."""

from __future__ import annotations

import httpx
import pytest

from tests.api_harness import make_stack, sse
from tests.daemon_harness import Media, wait_until

pytestmark = pytest.mark.xdist_group("api-cancel-retry")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store):
    media = Media(tmp_path_factory.mktemp("media-3s"), seconds=3.0)
    with make_stack(tmp_path_factory.mktemp("api-cancel"), store, media,
                    failpoints="before_render=raise*1,render_progress=sleep:0.25,claim_moved=sleep:1",
                    render={"chunk_frames": 2}) as s:
        # the first render fails (raise*1): spend it on the job the retry test retries, so
        # that the order in which the tests run does not matter
        name = s.upload_job("retry me").json()["name"]
        s.share.wait_for([name], daemons=[s.daemon])
        yield s


def test_a_failed_job_is_retried_from_its_kept_inputs(stack):
    name = "retry me"
    first = stack.follow(name)[-1]
    assert first["state"] == "failed" and first["error"]["code"] == "internal_error"
    failed_id = first["id"]

    r = httpx.post(f"{stack.url}/api/v1/jobs/{name}/retry", headers=stack.h)
    assert r.status_code == 202, r.text
    assert r.json()["name"] == name  # the new run takes over the failed record
    # from the retry on, the job reads as waiting, then queued -- the failed attempt kept
    # as its history -- never as the old failure (a client following it would stop there)
    seen: list[tuple[str, str | None]] = []
    while not seen or seen[-1][0] not in ("done", "failed"):
        doc = httpx.get(f"{stack.url}/api/v1/jobs/{name}", headers=stack.h).json()
        assert doc.get("id") != failed_id, (doc, seen)
        if doc["state"] in ("waiting", "queued") and "previous" in doc:
            assert doc["previous"]["id"] == failed_id and doc["previous"]["error"]["code"] == "internal_error"
        seen.append((doc["state"], doc.get("id")))
    states = [state for state, _id in seen]
    assert "waiting" in states and states[-1] == "done", states
    again = stack.follow(name)[-1]
    assert again["state"] == "done" and again["id"] != failed_id
    assert any(f"dropped again after the failed run {failed_id}" in n for n in again["notes"])
    assert not any(str(stack.share.root) in n for n in again["notes"])  # no server path in the record
    assert again["options"] == first["options"]
    # the failed run's record of inputs is kept aside, named by its id
    assert (stack.share.root / "failed" / f"{name}.{failed_id}").is_dir()

    done = httpx.post(f"{stack.url}/api/v1/jobs/{name}/retry", headers=stack.h)
    assert done.status_code == 409 and done.json()["error"]["code"] == "not_failed"
    missing = httpx.post(f"{stack.url}/api/v1/jobs/nothing-here/retry", headers=stack.h)
    assert missing.status_code == 404


def test_deleting_a_rendering_job_cancels_it(stack):
    name = stack.upload_job("cancel me").json()["name"]
    events = sse(f"{stack.url}/api/v1/jobs/{name}/events", stack.h)
    for _kind, doc in events:
        if doc["state"] == "rendering":
            break
    r = httpx.delete(f"{stack.url}/api/v1/jobs/{name}", headers=stack.h)
    assert r.status_code == 202 and r.json()["action"] == "cancel_requested", (r.text, stack.share.sidecar(name))
    last = [doc for _kind, doc in events][-1]
    assert last["state"] == "failed" and last["error"]["code"] == "cancelled"
    assert last["progress"] < 1.0  # it stopped mid-render
    wait_until(lambda: not stack.share.work_jobs(), 30, "the work folder to go")
    kept = stack.share.root / "failed" / name
    assert sorted(p.name for p in kept.rglob("*.*")) == sorted(["job.json", "presenter.mp4", "speech.wav",
                                                                f"{name}.job.json"])


def test_a_text_job_with_subtitles_is_retried_with_both(stack, tmp_path):
    """Its watermark was missing from the library; once it is there, the retry speaks the
    same text and keeps the same subtitles."""
    import shutil
    from pathlib import Path

    import numpy as np
    from PIL import Image

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it with apt)")
    srt = b"1\n00:00:00,100 --> 00:00:00,900\nHi\n"
    r = httpx.post(f"{stack.url}/api/v1/jobs", headers=stack.h, timeout=30,
                   data={"text": "Hi there.", "template_name": "anna.mp4", "name": "spoken retry",
                         "watermark": "brand.png"},
                   files=[("subtitle_file", ("hi.srt", srt))])
    assert r.status_code == 202, r.text
    first = stack.follow("spoken retry")[-1]
    assert first["state"] == "failed" and "brand.png" in first["error"]["message"]

    library = Path(stack.daemon.config).parent / "library"
    Image.fromarray(np.full((20, 40, 3), 255, np.uint8)).save(library / "brand.png")
    again = httpx.post(f"{stack.url}/api/v1/jobs/spoken%20retry/retry", headers=stack.h)
    assert again.status_code == 202, again.text
    doc = stack.follow("spoken retry")[-1]
    assert doc["state"] == "done", doc.get("error")
    assert doc["options"]["text"] == "Hi there." and doc["options"]["subtitle_file"].endswith("hi.srt")
    assert "soft subtitles: 1 cue" in " ".join(doc["notes"]) and "watermark" in " ".join(doc["notes"])
