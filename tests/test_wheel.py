"""lipsyncd as a normal Python package: the wheel built from this checkout, installed into a
fresh virtual environment outside it (no source tree importable), runs everything a user
runs -- `--version`, `example-config`, `check-config`, a render, `run --burst`, the daemon
with its embedded SeaweedFS, `serve` (console and OpenAPI) -- and a second environment
with only the wheel and httpx submits a job and gets a link that plays.

Torch is the installer's choice: installed first, the way the README says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest

from tests.daemon_harness import REPO, free_port
from tests.media_factory import SPEECH_SHORT, write_still

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]
TORCH_SPEC = os.environ.get("LIPSYNCD_TORCH_SPEC", "torch==2.13.0")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} -> {done.returncode}\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing of this checkout or its venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("LIPSYNCD_", "AWS_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout's files (a build writes into its source)."""
    src = tmp_path_factory.mktemp("wheel-src") / "lipsyncd"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
         cwd=out, env={**os.environ})
    (built,) = out.glob("lipsyncd-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with torch (installed first) and the wheel with its dependencies."""
    root = tmp_path_factory.mktemp("venv") / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(root)], cwd=root.parent, env=_clean_env())
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH_SPEC], cwd=root.parent, env=_clean_env(), timeout=900)
    _run([*pip, str(wheel)], cwd=root.parent, env=_clean_env(), timeout=900)
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A user's folder outside the checkout: media, and the config example-config printed."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "inbox").mkdir()  # the share's inbox: the daemon refuses to start without it
    write_still(folder / "face.png", (192, 192))
    shutil.copy(SPEECH_SHORT, folder / "speech.wav")
    return folder


def test_nothing_of_the_checkout_is_importable_there(venv, home):
    code = "import daemon, lipsync; print(daemon.__file__); print(lipsync.__file__)"
    out = _run([str(venv / "bin" / "python"), "-c", code], cwd=home, env=_clean_env()).stdout
    assert str(REPO) not in out and "site-packages" in out


def test_the_installed_commands_check_render_and_run_a_burst(venv, home):
    lipsyncd = str(venv / "bin" / "lipsyncd")
    env = _clean_env(LIPSYNCD_STORAGE__EMBEDDED__PORT=str(free_port()), LIPSYNCD_WATCH__SETTLE_SECONDS="0.5",
                     LIPSYNCD_WATCH__POLL_INTERVAL="0.2")
    assert _run([lipsyncd, "--version"], cwd=home, env=env).stdout.startswith("lipsyncd ")
    example = _run([lipsyncd, "example-config"], cwd=home, env=env).stdout
    assert "[storage.embedded]" in example
    (home / "config.toml").write_text(example)
    assert ": OK" in _run([lipsyncd, "check-config"], cwd=home, env=env).stdout

    _run([lipsyncd, "render", "speech.wav", "face.png", "-o", "talk.mp4"], cwd=home, env=env)
    with av.open(str(home / "talk.mp4")) as c:
        assert c.streams.video and c.streams.audio and sum(1 for _ in c.decode(video=0)) > 10

    shutil.copy(home / "speech.wav", home / "inbox" / "burst.wav")
    shutil.copy(home / "face.png", home / "inbox" / "burst.png")
    _run([lipsyncd, "run", "--burst"], cwd=home, env=env, timeout=600)
    doc = json.loads((home / "outbox" / "burst.json").read_text())
    assert doc["state"] == "done" and doc["outputs"][0]["key"].endswith("burst.mp4"), doc


def test_the_daemon_serve_and_a_client_only_install_carry_a_job_to_a_link_that_plays(wheel, venv, home, tmp_path):
    lipsyncd = str(venv / "bin" / "lipsyncd")
    api_port = free_port()
    env = _clean_env(LIPSYNCD_STORAGE__EMBEDDED__PORT=str(free_port()), LIPSYNCD_WATCH__SETTLE_SECONDS="0.5",
                     LIPSYNCD_WATCH__POLL_INTERVAL="0.2", LIPSYNCD_API__PORT=str(api_port),
                     LIPSYNCD_API__PUBLIC_URL=f"http://127.0.0.1:{api_port}")
    if not (home / "config.toml").exists():
        (home / "config.toml").write_text(_run([lipsyncd, "example-config"], cwd=home, env=env).stdout)
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("run", "serve")}
    procs: dict[str, subprocess.Popen] = {}

    def tails() -> str:
        return "\n".join(f"--- {n}:\n{(tmp_path / f'{n}.log').read_text(errors='replace')[-3000:]}" for n in logs)

    try:
        procs["run"] = subprocess.Popen([lipsyncd, "run"], cwd=home, env=env, stdout=logs["run"],
                                        stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: "daemon ready" in (tmp_path / "run.log").read_text(errors="replace"), 120, "the daemon", tails)
        procs["serve"] = subprocess.Popen([lipsyncd, "serve"], cwd=home, env=env, stdout=logs["serve"],
                                          stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{api_port}"
        _wait(lambda: _ok(f"{base}/healthz"), 60, "lipsyncd serve", tails)
        signin = httpx.get(f"{base}/signin")
        assert signin.status_code == 200 and "<form" in signin.text, tails()  # the console's pages are in the wheel
        chinese = httpx.get(f"{base}/signin", headers={"Accept-Language": "zh-CN"})
        assert '<html lang="zh-CN">' in chinese.text and "登录" in chinese.text, tails()  # and its catalogs
        assert httpx.get(f"{base}/static/console.css").status_code == 200
        assert "/api/v1/jobs" in httpx.get(f"{base}/api/v1/openapi.json").json()["paths"]
        key = _run([lipsyncd, "api-key", "create", "wheel-test"], cwd=home, env=env).stdout.split()[-1]
        assert key.startswith("lsk_"), key

        # a client-only install: the wheel without its dependencies, and httpx
        client = tmp_path / "client"
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", str(client)], cwd=tmp_path, env=_clean_env())
        pip = [str(client / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, "--no-deps", str(wheel)], cwd=tmp_path, env=_clean_env())
        _run([*pip, "httpx>=0.27,<1"], cwd=tmp_path, env=_clean_env())
        done = subprocess.run([str(client / "bin" / "lipsyncd"), "submit", str(home / "speech.wav"),
                               str(home / "face.png"), "--server", base, "--api-key", key, "--name", "from-wheel",
                               "--wait"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{tails()}"
        link = done.stdout.strip().splitlines()[-1]
        assert link.startswith(f"{base}/l/"), done.stdout
        video = httpx.get(link, follow_redirects=True, timeout=60)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        (tmp_path / "from-wheel.mp4").write_bytes(video.content)
        with av.open(str(tmp_path / "from-wheel.mp4")) as c:  # the link plays: frames and sound decode
            assert sum(1 for _ in c.decode(video=0)) > 10 and c.streams.audio
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for fh in logs.values():
            fh.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, timeout: float, what: str, tails) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails()}")
        time.sleep(0.2)
