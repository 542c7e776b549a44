"""Log output: JSON lines off a terminal, job context on every line, nothing secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from daemon import logsetup

SIGNED = ("https://s3.example.com/lipsyncd/videos/2025/01/02/talk/talk.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250102%2Fus-east-1%2Fs3%2Faws4_request"
          "&X-Amz-Date=20250102T000000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host"
          "&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured():
    stream = io.StringIO()
    yield stream
    logsetup.configure("info", "json", stream=io.StringIO())


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_off_a_terminal_every_line_is_one_json_object(captured):
    assert logsetup.configure("info", "auto", stream=captured) == "json"
    log = logsetup.get_logger("lipsyncd.test")
    log.info("job claimed", job="talk", inputs=2)
    log.debug("not shown at info")
    logging.getLogger("botocore.hooks").warning("a library speaks through logging")
    logging.getLogger("botocore.hooks").info("library chatter below warning is dropped")
    got = lines(captured)
    assert [g["event"] for g in got] == ["job claimed", "a library speaks through logging"]
    assert got[0]["level"] == "info" and got[0]["job"] == "talk" and got[0]["inputs"] == 2
    assert got[0]["timestamp"].endswith("Z")
    assert got[1]["level"] == "warning" and got[1]["logger"] == "botocore.hooks"


def test_on_a_terminal_the_output_is_readable_text():
    term = FakeTerminal()
    try:
        assert logsetup.configure("info", "auto", stream=term) == "console"
        logsetup.get_logger().info("daemon ready", inbox="/srv/inbox")
        out = term.getvalue()
        assert "daemon ready" in out and "/srv/inbox" in out
        with pytest.raises(json.JSONDecodeError):
            json.loads(out.splitlines()[0])
    finally:
        logsetup.configure("info", "json", stream=io.StringIO())


def test_job_context_is_on_every_line_while_bound_and_only_then(captured):
    logsetup.configure("debug", "json", stream=captured)
    other_module = logsetup.get_logger("lipsyncd.storage")
    with logsetup.bind_job(job="talk", job_id="talk-20250102T000000Z-abcdef"):
        logsetup.get_logger("lipsyncd.worker").info("rendering")
        other_module.info("uploaded", key="videos/x.mp4")
        logging.getLogger("watchdog.observers").warning("stdlib line inside the job")
    other_module.info("idle")
    got = lines(captured)
    assert [g.get("job_id") for g in got] == ["talk-20250102T000000Z-abcdef"] * 3 + [None]
    assert all(g.get("job") == "talk" for g in got[:3])


def test_presigned_urls_and_secrets_never_reach_the_log(captured):
    logsetup.configure("info", "json", stream=captured)
    log = logsetup.get_logger()
    log.info("link signed", url=SIGNED, nested={"links": [SIGNED]})
    log.info("credentials loaded", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
             session_token="FQoGZXIvYXdzEXAMPLE")
    log.warning(f"request failed for {SIGNED}")
    try:
        blob = "hunter2-in-a-local-variable"  # locals may hold anything: never dumped
        raise RuntimeError(f"boom at {SIGNED} ({len(blob)})")
    except RuntimeError:
        log.exception("upload crashed")
    out = captured.getvalue()
    assert "upload crashed" in out and "RuntimeError" in out
    for secret in ("X-Amz-Signature=0123", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "FQoGZXIvYXdzEXAMPLE", "hunter2"):
        assert secret not in out, secret
    first = lines(captured)[0]
    # the object stays identifiable: scheme, host and path are kept
    assert first["url"] == "https://s3.example.com/lipsyncd/videos/2025/01/02/talk/talk.mp4?<redacted>"


def test_level_from_the_config_filters(captured):
    logsetup.configure("warning", "json", stream=captured)
    log = logsetup.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert [g["event"] for g in lines(captured)] == ["loud"]
