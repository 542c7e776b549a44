"""The container image, built from the Containerfile and run with podman: a render, and the
daemon taking a job dropped into a mounted inbox through its embedded store to a done
sidecar, healthy by its HEALTHCHECK, stopped by SIGTERM the way systemd stops it (the render
in progress finishes, the container exits 0).

No image registry is reachable here, so the base image the Containerfile starts FROM is
made by debootstrap (Debian bookworm, minbase) from the mirror apt uses, and imported under
that name; the build never pulls. Runs in CI's container stage (scripts/test-container,
which sets LIPSYNCD_CONTAINER_TESTS=1), not in the main suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest

from tests.daemon_harness import REPO
from tests.media_factory import SPEECH, SPEECH_SHORT, write_face_video, write_still

pytestmark = [
    pytest.mark.skipif(os.environ.get("LIPSYNCD_CONTAINER_TESTS") != "1" or not shutil.which("podman"),
                       reason="the container stage (scripts/test-container) runs these: podman, root, a few minutes"),
    pytest.mark.timeout(1800),  # the first test builds the image: minutes, not the suite's default
]

BASE = "docker.io/library/debian:bookworm-slim"  # what the Containerfile's FROM names
IMAGE = "localhost/lipsyncd-test:latest"
MIRROR = "http://deb.debian.org/debian"


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n" \
                                     f"{done.stderr[-3000:]}"
    return done


def _apt_mirror() -> str:
    """The Debian mirror apt on this machine uses (so debootstrap needs no other network)."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = source.read_text()
        except OSError:
            continue
        found = re.search(r"(?:^URIs:\s*|^deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", text, re.M)
        if found:
            return found.group(1)
    return MIRROR


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    figures: dict = {}
    if podman("image", "exists", BASE, check=False).returncode != 0:
        started = time.monotonic()
        root = tmp_path_factory.mktemp("bookworm") / "root"
        done = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), _apt_mirror()],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, text=True,
                                  timeout=600)
        tar.wait()
        assert imported.returncode == 0, imported.stderr
        shutil.rmtree(root, ignore_errors=True)
        figures["base_image_seconds"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    ca = "/etc/ssl/certs/ca-certificates.crt"
    secret = ["--secret", f"id=ca,src={ca}"] if os.path.exists(ca) else []
    # where this machine keeps wheels (torch's CPU build among them), the build takes them first
    wheels = [p for p in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if os.path.isdir(p)][:1]
    local = ["--volume", f"{wheels[0]}:/wheels:ro", "--build-arg", "PIP_FIND_LINKS=/wheels",
             "--build-arg", "TORCH_INDEX="] if wheels else []
    # --format docker: the OCI format has no HEALTHCHECK, and podman would drop it
    podman("build", "--pull=never", "--format", "docker", *secret, *local, "-t", IMAGE, "-f", "Containerfile",
           str(REPO), timeout=1500)
    figures["build_seconds"] = round(time.monotonic() - started, 1)
    size = podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip()
    figures["image_mb"] = round(int(size) / 1e6)
    print(f"\ncontainer image: {figures}")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "container.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


@pytest.fixture
def folder(tmp_path) -> Path:
    tmp_path.chmod(0o777)  # the container's user (uid 10001) writes here
    return tmp_path


def _shared(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def test_the_image_renders_a_job_given_on_the_command_line(image, folder):
    write_still(folder / "face.png", (192, 192))
    shutil.copy(SPEECH_SHORT, folder / "speech.wav")
    podman("run", "--rm", "-v", f"{folder}:/work", "-w", "/work", IMAGE,
           "render", "speech.wav", "face.png", "-o", "talk.mp4", timeout=600)
    with av.open(str(folder / "talk.mp4")) as c:
        assert c.streams.audio and sum(1 for _ in c.decode(video=0)) > 10
    user = podman("run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip()
    assert user == "10001"  # not root


def test_the_daemon_takes_a_dropped_job_to_done_and_stops_as_under_systemd(image, folder):
    share = _shared(folder / "share")
    for sub in ("inbox", "outbox", "done", "failed"):
        _shared(share / sub)
    name = f"lipsyncd-test-{os.getpid()}"
    # the state in a named volume (it takes the image's folder and owner): private to the container
    podman("run", "-d", "--name", name, "-v", f"{share}:/data", "-v", f"{name}-state:/var/lib/lipsyncd",
           "-e", "LIPSYNCD_WATCH__SETTLE_SECONDS=0.5", "-e", "LIPSYNCD_WATCH__POLL_INTERVAL=0.2",
           "-e", "LIPSYNCD_WATCH__MODE=polling", IMAGE)
    try:
        write_still(folder / "face.png", (192, 192))
        shutil.copy(SPEECH_SHORT, share / "inbox" / "first.wav")
        shutil.copy(folder / "face.png", share / "inbox" / "first.png")
        doc = _wait_for(share / "outbox" / "first.json", ("done", "failed"), name)
        assert doc["state"] == "done", doc
        # the inputs are filed just after the sidecar says done: job.json's finished_at says when
        _wait_for(share / "done" / "first" / "job.json", (), name, 60, key="finished_at")
        assert (share / "done" / "first" / "first.wav").is_file()
        health = podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, (health.stdout, health.stderr, _logs(name))

        # a longer job: SIGTERM while it renders lets the render finish, then the container exits 0
        write_face_video(folder / "long.mp4", seconds=2.0, size=(256, 256))
        shutil.copy(SPEECH, share / "inbox" / "second.wav")
        shutil.copy(folder / "long.mp4", share / "inbox" / "second.mp4")
        _wait_for(share / "outbox" / "second.json", ("rendering",), name)
        podman("kill", "--signal", "TERM", name)
        podman("wait", name, timeout=600)
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0", _logs(name)
        doc = json.loads((share / "outbox" / "second.json").read_text())
        assert doc["state"] == "done", (doc["state"], _logs(name))
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", f"{name}-state", check=False)


def _logs(name: str) -> str:
    return podman("logs", "--tail", "60", name, check=False).stdout[-6000:]


def _wait_for(path: Path, states: tuple[str, ...], name: str, timeout: float = 600, *,
              key: str = "state") -> dict:
    """``path``'s JSON once its ``key`` is one of ``states`` (any value when ``states`` is empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc = json.loads(path.read_text())
            if doc.get(key) and (not states or doc.get(key) in states):
                return doc
        except (FileNotFoundError, ValueError):
            pass
        running = podman("inspect", name, "--format", "{{.State.Running}}", check=False).stdout.strip()
        assert running == "true", f"the container stopped\n{_logs(name)}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {path.name} to be {states}\n{_logs(name)}")
