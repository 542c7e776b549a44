"""Shared pytest configuration. Fixtures for the real SeaweedFS server live in tests/seaweed.py."""

from __future__ import annotations

import uuid

import pytest

from tests.daemon_harness import LOGGED, Media, Store, drop_bucket

pytest_plugins = ["tests.seaweed"]


@pytest.fixture(scope="module")
def module_store(seaweed, request) -> Store:
    """The session's SeaweedFS (tests/seaweed.py), with a bucket of this test module's own.
    ``store`` is the same for daemon tests (a module that needs a store it can stop makes its own)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    store = Store.attach(seaweed, f"{module}-{uuid.uuid4().hex[:12]}")
    yield store
    drop_bucket(seaweed, store.bucket)  # its volumes go back to the server for the next modules


@pytest.fixture(scope="module")
def one_second_media(tmp_path_factory) -> Media:
    """One tiny valid audio + template pair (1 s), for daemon tests that need a job to flow."""
    return Media(tmp_path_factory.mktemp("media"), seconds=1.0)


@pytest.fixture(scope="module")
def store(module_store) -> Store:
    return module_store


@pytest.fixture(scope="module")
def media(one_second_media) -> Media:
    return one_second_media


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the last log lines of every daemon and API process it ran with."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for proc in list(LOGGED):
            try:
                report.sections.append((f"log tail: {proc.host} ({proc.log})", proc.log_tail(60)))
            except Exception:  # noqa: BLE001 - a report must never fail over a log that went away
                pass
