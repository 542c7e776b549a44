"""Permanent links across a credential rotation: the store's keys are replaced, every
presigned URL signed with the old ones dies, and the permanent link -- which holds no
credentials, only the object key and its tag -- goes on working, signed with the new keys."""

from __future__ import annotations

import httpx
import pytest

from daemon import config as config_mod
from daemon.storage.credentials import generate
from tests.api_harness import ThreadApi, object_store
from tests.daemon_harness import Daemon, Share, Store, free_port


@pytest.fixture
def own_store(tmp_path):
    store = Store(tmp_path / "store").start()
    try:
        yield store
    finally:
        store.stop()


def test_a_permanent_link_survives_a_credential_rotation(tmp_path, own_store, media):
    share = Share(tmp_path / "share")
    port = free_port()
    with Daemon(tmp_path, share, own_store, "h1",
                extra={"api": {"public_url": f"http://127.0.0.1:{port}", "port": port}}) as daemon:
        daemon.start()
        share.drop_job("talk", media)
        doc = share.wait_for(["talk"], daemons=[daemon])["talk"]
    assert doc["state"] == "done"
    out = doc["outputs"][0]
    assert httpx.get(out["url"]).status_code == 200

    # rotate: the store now knows only new credentials
    own_store.stop()
    own_store.credentials = generate()
    own_store.start()
    assert httpx.get(out["url"]).status_code == 403  # signed with keys that no longer exist

    cfg = config_mod.load(daemon.config)  # the daemon's share, state and link secret
    with ThreadApi(cfg, object_store(cfg, own_store)) as api:
        hop = httpx.get(out["link"].replace(cfg.api_base_url, api.url))
        assert hop.status_code == 307
        assert own_store.credentials.access_key in hop.headers["location"]
        video = httpx.get(hop.headers["location"])
    assert video.status_code == 200 and len(video.content) == out["size"]
