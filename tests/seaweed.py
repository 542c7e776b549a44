"""pytest plugin: one real SeaweedFS S3 server for the whole test session.

Fixtures:

``seaweed`` (session): a running server on free 127.0.0.1 ports in a temporary folder;
    ``.endpoint``, ``.access_key``, ``.secret_key``, ``.credentials``,
    ``.config(bucket, base, **storage)`` (a Config with storage.mode = "s3" pointing at it),
    ``.store(cfg)`` (an ObjectStore using the server's credentials explicitly) and
    ``.admin`` (a raw boto3 client, to inspect what the store really holds).
``bucket``: a fresh bucket name per test (created by the test, removed afterwards).
``aws_env``: the standard AWS credential chain (AWS_ACCESS_KEY_ID, ...) pointed at the
    server for one test only; monkeypatch undoes it, so no test sees another's variables.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from daemon.config import Config, from_dict
from daemon.storage import EmbeddedSeaweed, ObjectStore, S3Credentials
from daemon.storage.credentials import load_or_create
from tests.daemon_harness import TEST_VOLUME_MB, drop_bucket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class SeaweedServer:
    endpoint: str
    port: int
    access_key: str
    secret_key: str = field(repr=False)
    server: EmbeddedSeaweed = field(repr=False)

    @property
    def credentials(self) -> S3Credentials:
        return S3Credentials(self.access_key, self.secret_key)

    def config(self, bucket: str, base: Path, *, links: dict | None = None, **storage: Any) -> Config:
        """A validated Config for the s3 mode against this server (paths under ``base``)."""
        section = {"mode": "s3", "endpoint": self.endpoint, "bucket": bucket, "addressing": "path",
                   "max_attempts": 2, "connect_timeout": 2, "read_timeout": 20, **storage}
        return from_dict({"paths": {"state": str(base / "state")}, "storage": section, "links": links or {}},
                         base=base, name="<test config>")

    def store(self, cfg: Config) -> ObjectStore:
        return ObjectStore(cfg, credentials=self.credentials)

    @property
    def admin(self):
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}, proxies={},
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("seaweed") / "state"
    creds = load_or_create(state)
    port = free_port()
    server = EmbeddedSeaweed(data_dir=state / "seaweedfs", state_dir=state, port=port,
                             credentials=creds, start_timeout=60, stop_timeout=5, volume_size_mb=TEST_VOLUME_MB)
    server.start()
    try:
        yield SeaweedServer(server.endpoint, port, creds.access_key, creds.secret_key, server)
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: SeaweedServer):
    name = f"t-{uuid.uuid4().hex[:20]}"
    yield name
    drop_bucket(seaweed, name)


@pytest.fixture
def aws_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point the standard AWS credential chain at the test server, for this test only."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    env = {
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        # no profile files, no instance metadata: only what this test sets counts
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
