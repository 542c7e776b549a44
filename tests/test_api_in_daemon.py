"""``[api] enabled = true``: the one-box setup, where ``lipsyncd run`` serves the API too.
And the promise of permanent links: they outlive the presigned URL in the sidecar and
every re-signing of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.api_harness import auth, new_key, wait_http
from tests.daemon_harness import REPO, Daemon, Share, free_port
from daemon import config as config_mod

pytestmark = pytest.mark.xdist_group("api-in-daemon")


@pytest.fixture(scope="module")
def one_box(tmp_path_factory, store):
    root = tmp_path_factory.mktemp("one-box")
    port = free_port()
    daemon = Daemon(root, Share(root / "share"), store, "box", extra={"api": {"enabled": True, "port": port}})
    daemon.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", alive=lambda: daemon.alive)
    key = new_key(config_mod.load(daemon.config), "box")
    try:
        yield daemon, url, key
    finally:
        daemon.terminate()


def test_the_daemon_serves_the_api_and_stops_it_with_itself(one_box, media, tmp_path):
    daemon, url, key = one_box
    with open(media.audio, "rb") as a, open(media.template, "rb") as t:
        r = httpx.post(f"{url}/api/v1/jobs", headers=auth(key), files=[("audio", ("a.wav", a)),
                                                                         ("template", ("t.mp4", t))])
    assert r.status_code == 202, r.text
    doc = daemon.share.wait_for([r.json()["name"]], daemons=[daemon])["a"]
    assert doc["state"] == "done"
    # without a public_url the links use bind:port
    assert doc["outputs"][0]["link"].startswith(f"{url}/l/")
    assert httpx.get(f"{url}/readyz", headers=auth(key)).json()["status"] == "ready"


@pytest.mark.slow
def test_a_permanent_link_outlives_its_presigned_url_and_every_resigning(one_box, media):
    daemon, url, key = one_box
    with open(media.audio, "rb") as a, open(media.template, "rb") as t:
        r = httpx.post(f"{url}/api/v1/jobs", headers=auth(key), data={"name": "short", "link_lifetime": "1m"},
                       files=[("audio", ("a.wav", a)), ("template", ("t.mp4", t))])
    assert r.status_code == 202, r.text
    doc = daemon.share.wait_for(["short"], daemons=[daemon])["short"]
    out = doc["outputs"][0]
    first_url, link = out["url"], out["link"]
    assert httpx.get(first_url).status_code == 200

    # links refresh re-signs the sidecar's URL; the permanent link stays the same and works
    time.sleep(1.1)  # SigV4 signs with a time in whole seconds: a re-signing in the same second is the same URL
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    env.update(daemon.store.env(), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "daemon", "links", "refresh", "short", "-c", str(daemon.config)],
                   check=True, env=env, capture_output=True, timeout=60)
    resigned = daemon.share.sidecar("short")["outputs"][0]
    assert resigned["url"] != first_url and resigned["link"] == link

    # wait until the first presigned URL has died...
    deadline = time.time() + 90
    while httpx.get(first_url).status_code == 200:
        assert time.time() < deadline, "the 1-minute presigned URL never expired"
        time.sleep(2)
    assert httpx.get(first_url).status_code == 403
    # ...the permanent link still leads to the video
    video = httpx.get(link, follow_redirects=True)
    assert video.status_code == 200 and len(video.content) == out["size"]


def test_the_api_port_closes_when_the_daemon_stops(one_box):
    daemon, url, _key = one_box
    port = int(url.rsplit(":", 1)[1])
    daemon.terminate()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
