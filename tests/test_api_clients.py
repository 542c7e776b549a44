"""Clients of the HTTP API against a real server and daemon: ``lipsyncd submit``, an
independent tus client (tuspy) resuming an interrupted upload, the GitHub Actions workflow
of docs/integrations/github-actions.md run step by step, and the Dify document's example.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import yaml

from tests.api_harness import MediaServer, auth, make_stack
from tests.daemon_harness import REPO

pytestmark = pytest.mark.xdist_group("api-clients")
DOCS = REPO / "docs" / "integrations"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store, media):
    with make_stack(tmp_path_factory.mktemp("api-clients"), store, media) as s:
        yield s


def lipsyncd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": str(REPO), **(env or {})}, cwd=cwd or REPO)


def write_noise_video(path: Path, seconds: float = 1.0, size: tuple[int, int] = (160, 120)) -> Path:
    """A video that does not compress to almost nothing (random pixels): tens of KiB."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(int(25 * seconds)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_mp3(path: Path, seconds: float = 1.0, freq: float = 300.0) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=22050)
        stream.layout = "mono"
        t = np.arange(int(22050 * seconds)) / 22050
        pcm = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="mono")
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# --------------------------------------------------------------------------- lipsyncd submit


def test_submit_waits_and_prints_one_permanent_link_per_video(stack):
    r = lipsyncd("submit", str(stack.media.audio), str(stack.media.template), "--template-name", "anna.mp4",
                 "--name", "cli job", "--wait", env={"LIPSYNCD_SERVER": stack.url, "LIPSYNCD_API_KEY": stack.key})
    assert r.returncode == 0, r.stderr
    links = r.stdout.split()
    assert len(links) == 2 and all(link.startswith(f"{stack.url}/l/") for link in links)
    assert all(httpx.get(link).status_code == 307 for link in links)
    assert "cli job: done" in r.stderr
    doc = stack.share.sidecar("cli job")
    assert sorted(o["link"] for o in doc["outputs"]) == sorted(links)


def test_submit_sends_large_files_as_resumable_uploads(stack):
    r = lipsyncd("submit", str(stack.media.audio), str(stack.media.template), "--server", stack.url,
                 "--api-key", stack.key, "--name", "resumable", "--wait", "--json", "--resumable-over", "1000")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["job"] == "resumable" and doc["state"] == "done"
    assert "uploading plain.mp4: 100%" in r.stderr and "uploading tone.wav: 100%" in r.stderr
    # each upload was taken by the job: nothing is left in the upload area
    uploads = stack.share.inbox / ".lipsyncd" / "uploads"
    assert not [p for p in uploads.iterdir() if p.is_file()]


def test_submit_exit_codes(stack, tmp_path):
    missing = lipsyncd("submit", str(tmp_path / "nope.wav"), str(stack.media.template), "--server", stack.url)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_template = lipsyncd("submit", str(stack.media.audio), "--server", stack.url)
    assert no_template.returncode == 2
    refused = lipsyncd("submit", str(stack.media.audio), str(stack.media.template), "--server", stack.url,
                       "--api-key", "lsk_wrong")
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF" + b"\0" * 100)
    rejected = lipsyncd("submit", str(bad), str(stack.media.template), "--server", stack.url, "--api-key", stack.key)
    assert rejected.returncode == 1 and "broken.wav" in rejected.stderr


def test_submit_needs_only_the_http_client(stack):
    """`pip install lipsyncd[client]` (httpx) is enough: the command imports nothing of the daemon's."""
    code = ("import sys\nfrom daemon.cli import main\nrc = main(sys.argv[1:])\n"
            "heavy = {'numpy', 'torch', 'av', 'boto3', 'botocore', 'apscheduler', 'structlog', 'fastapi',\n"
            "         'starlette', 'jsonschema', 'librosa', 'watchdog', 'prometheus_client', 'uvicorn', 'dlib'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}), rc)\n")
    r = subprocess.run([sys.executable, "-c", code, "submit", str(stack.media.audio), str(stack.media.template),
                        "--server", stack.url, "--api-key", stack.key, "--name", "light"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.stdout.strip().splitlines()[-1] == "[] 0", (r.stdout, r.stderr)
    extras = re.search(r"client = \[(.*?)\]", (REPO / "pyproject.toml").read_text()).group(1)
    assert "httpx" in extras


# --------------------------------------------------------------------------- tus


def test_an_interrupted_tus_upload_resumes_and_feeds_a_job(stack, tmp_path):
    from tusclient import client as tus_client

    big = write_noise_video(tmp_path / "long-take.mp4")
    size = big.stat().st_size
    assert size > 30000
    tus = tus_client.TusClient(f"{stack.url}/api/v1/uploads", headers=auth(stack.key))
    uploader = tus.uploader(str(big), chunk_size=4096, metadata={"filename": big.name, "filetype": "video/mp4"})
    uploader.upload_chunk()
    uploader.upload_chunk()
    url = uploader.url
    assert uploader.offset == 8192

    # the connection drops in the middle of the next piece: the server keeps what arrived
    path = "/" + url.split("/", 3)[3]
    with socket.create_connection(("127.0.0.1", stack.api.cfg.api.port)) as s:
        s.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.key}\r\n"
                   f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 8192\r\nContent-Type: application/offset+octet-stream\r\n"
                   f"Content-Length: 8192\r\n\r\n").encode() + big.read_bytes()[8192:8192 + 3000])
    head = {}
    for _ in range(50):
        head = httpx.head(url, headers={**auth(stack.key), "Tus-Resumable": "1.0.0"})
        if int(head.headers["upload-offset"]) > 8192:
            break
    offset = int(head.headers["upload-offset"])
    assert 8192 < offset <= 8192 + 3000 and int(head.headers["upload-length"]) == size

    # a new client, knowing only the URL, resumes from the server's offset
    resumed = tus.uploader(str(big), url=url, chunk_size=8192)
    assert resumed.offset == offset
    resumed.upload()
    stored = (stack.share.inbox / ".lipsyncd" / "uploads" / url.rsplit("/", 1)[1]).read_bytes()
    assert stored == big.read_bytes()

    audio = tus.uploader(str(stack.media.audio), chunk_size=65536,
                         metadata={"filename": "voice.wav", "filetype": "audio/wav"})
    audio.upload()
    r = httpx.post(f"{stack.url}/api/v1/jobs", headers=auth(stack.key),
                   json={"audio_upload": audio.url, "template_upload": [url], "name": "from tus"})
    assert r.status_code == 202, r.text
    doc = stack.share.wait_for(["from tus"], daemons=[stack.daemon])["from tus"]
    assert doc["state"] == "done" and doc["outputs"][0]["name"] == "from tus.mp4"
    # an upload is used once
    again = httpx.post(f"{stack.url}/api/v1/jobs", headers=auth(stack.key),
                       json={"audio_upload": audio.url, "template_name": "anna.mp4"})
    assert again.status_code == 404 and again.json()["error"]["field"] == "audio_upload"


# --------------------------------------------------------------------------- the integration documents


def doc_yaml(path: Path) -> dict:
    (block,) = re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)
    return yaml.safe_load(block)


def test_the_github_actions_workflow_of_the_docs_renders_pushed_audio(stack, tmp_path):
    workflow = doc_yaml(DOCS / "github-actions.md")
    (job,) = workflow["jobs"].values()
    assert workflow[True]["push"]["paths"] == ["content/audio/*.mp3"]  # YAML 1.1 reads `on` as True

    repo = tmp_path / "repo"
    (repo / "content" / "templates").mkdir(parents=True)
    (repo / "content" / "audio").mkdir()
    (repo / "content" / "templates" / "presenter.mp4").write_bytes(stack.media.template.read_bytes())
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", *a], cwd=repo,  # noqa: E731
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "template")
    before = git("rev-parse", "HEAD")
    write_mp3(repo / "content" / "audio" / "welcome.mp3")
    write_mp3(repo / "content" / "audio" / "pricing.mp3", freq=500)
    git("add", ".")
    git("commit", "-qm", "two new audio files")
    sha = git("rev-parse", "HEAD")

    summary = tmp_path / "summary.md"
    contexts = {"secrets.LIPSYNCD_SERVER": stack.url, "secrets.LIPSYNCD_API_KEY": stack.key,
                "github.event.before": before, "github.sha": sha}
    ran = []
    for step in job["steps"]:
        if "run" not in step:
            assert step["uses"].startswith(("actions/checkout@", "actions/setup-python@"))
            continue
        if step.get("id") == "install":
            # installs this project's client extra; this test runs it from the checkout instead
            assert re.match(r'pip install "lipsyncd\[client\] @ git\+https://', step["run"])
            continue
        env = {k: re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}", lambda m: contexts[m.group(1)], str(v))
               for k, v in (step.get("env") or {}).items()}
        assert "${{" not in step["run"]
        bin_dir = Path(sys.executable).parent
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=repo,
                           capture_output=True, text=True, timeout=300,
                           env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
                                "PYTHONPATH": str(REPO), "GITHUB_SHA": sha, "GITHUB_STEP_SUMMARY": str(summary),
                                **env})
        assert r.returncode == 0, r.stdout + r.stderr
        ran.append(r.stdout)
    printed = re.findall(r"^(content/audio/\S+\.mp3): (\S+)$", ran[-1], re.M)
    assert sorted(a for a, _ in printed) == ["content/audio/pricing.mp3", "content/audio/welcome.mp3"]
    for _audio, link in printed:
        assert httpx.get(link, follow_redirects=True).status_code == 200
        assert link in summary.read_text()
    assert stack.share.sidecar(f"welcome-{sha[:7]}")["state"] == "done"


def test_the_dify_documents_example_submits_a_job(stack, tmp_path):
    text = (DOCS / "dify.md").read_text()
    doc = httpx.get(f"{stack.url}/api/v1/openapi.json").json()
    ops = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    for named in re.findall(r"`(\w+Job\w*|listJobs|jobEvents|openLink)`", text):
        assert named in ops, named
    example = json.loads(re.search(r"```json\n(\{.*?\})\n```", text, re.S).group(1))
    folder = tmp_path / "tts"
    folder.mkdir()
    (folder / "speech.wav").write_bytes(stack.media.audio.read_bytes())
    files = MediaServer(folder)
    try:
        example["audio_url"] = files.url("speech.wav")  # what the TTS node produced
        r = httpx.post(f"{stack.url}/api/v1/jobs", headers=auth(stack.key), json=example)
        assert r.status_code == 202, r.text
        name = r.json()["name"]
        doc = stack.share.wait_for([name], daemons=[stack.daemon])[name]
    finally:
        files.close()
    assert doc["state"] == "done"
