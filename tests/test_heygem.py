"""lipsyncd in front of HeyGem / Duix.Avatar servers: real daemons, real HTTP, real renders.

The servers are the project's stand-in (tests/heygem_standin.py) for the closed GPU service,
which cannot run here; it follows the documented protocol and really renders.
"""

from __future__ import annotations

import time
from pathlib import Path


from tests.daemon_harness import Daemon, Media, Share, download, wait_until
from tests.heygem_standin import CONTAINER_DIR, Behaviour, StandInServer
from tests.media_factory import probe, write_face_video, write_tone


def servers(tmp_path: Path, n: int, **behaviour) -> list[StandInServer]:
    return [StandInServer(tmp_path / f"heygem-{i}" / "face2face", Behaviour(**behaviour)).start() for i in range(n)]


def heygem_daemon(tmp_path: Path, share: Share, store, stand_ins: list[StandInServer], host: str = "front",
                  **heygem) -> Daemon:
    settings = {"servers": [{"url": s.url, "host_dir": str(s.data_dir), "container_dir": CONTAINER_DIR}
                            for s in stand_ins],
                "poll_interval": 0.2, "stall_timeout": 15, "task_timeout": 120, "busy_retry": 0.3, **heygem}
    return Daemon(tmp_path, share, store, host, engine="heygem",
                  extra={"render.heygem": settings, "render": {"retry_delay": 0.5, "retry_delay_max": 1}})


def test_twelve_jobs_on_three_servers_one_task_each_at_a_time_none_lost(tmp_path, module_store):
    face = write_face_video(tmp_path / "face.mp4", seconds=1.0, size=(128, 128))
    audio = write_tone(tmp_path / "speech.wav", seconds=1.2)
    stand_ins = servers(tmp_path, 3, engine="warp", min_seconds=0.5)
    share = Share(tmp_path / "share")
    names = [f"clip-{i:02d}" for i in range(12)]
    with heygem_daemon(tmp_path, share, module_store, stand_ins).start() as daemon:
        for n in names:
            share.drop(f"{n}.mp4", face)
            share.drop(f"{n}.wav", audio)
        docs = share.wait_for(names, ("done",), timeout=240, daemons=[daemon])
    # every job submitted once: no busy answer (10001) lost one, none was sent twice
    assert sum(len(s.accepted) for s in stand_ins) == 12, [n for d in docs.values() for n in d["notes"]]
    assert all(s.accepted for s in stand_ins)  # all three servers worked
    assert max(s.max_running for s in stand_ins) == 1
    for doc in docs.values():
        (out,) = doc["outputs"]
        assert doc["engine"] == "heygem" and abs(out["duration"] - 1.2) <= 0.05
        body = download(out["url"])
        played = tmp_path / "played.mp4"
        played.write_bytes(body)
        info = probe(played)
        assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
        assert abs(info["duration"] - 1.2) < 0.1
    for s in stand_ins:  # nothing left in the shared folders
        assert not list((s.data_dir / "lipsyncd").glob("*")) and not list((s.data_dir / "temp").glob("*"))


def test_a_stalled_task_is_tried_again_elsewhere_and_the_job_ends_done(tmp_path, module_store, media):
    stalling, healthy = servers(tmp_path, 2)
    stalling.behaviour.stall_at = 0.2
    share = Share(tmp_path / "share")
    with heygem_daemon(tmp_path, share, module_store, [stalling, healthy], stall_timeout=3).start() as daemon:
        share.drop_job("stuck", media)
        doc = share.wait_for(["stuck"], ("done",), timeout=90, daemons=[daemon])["stuck"]
    assert len(stalling.accepted) == 1 and len(healthy.accepted) == 1
    assert any("stalled at 20%" in n for n in doc["notes"]), doc["notes"]


def test_a_remote_failure_fails_the_job_with_the_servers_message(tmp_path, module_store, media):
    (stand_in,) = servers(tmp_path, 1, progress_style="fraction", result_style="bare")
    stand_in.behaviour.fail_with = "人脸检测失败"
    share = Share(tmp_path / "share")
    with heygem_daemon(tmp_path, share, module_store, [stand_in]).start() as daemon:
        share.drop_job("noface", media)
        doc = share.wait_for(["noface"], ("failed",), timeout=60, daemons=[daemon])["noface"]
        assert doc["error"]["code"] == "render_failed_remote"
        assert "人脸检测失败" in doc["error"]["message"] and stand_in.url.split("//")[1] in doc["error"]["message"]
        # the sidecar says failed a moment before the inputs are filed
        wait_until(lambda: (share.root / "failed" / "noface" / "noface.wav").is_file(), 15, "the inputs in failed/")
        share.drop_job("fine", media)  # the next one goes through (fraction progress, result without temp/)
        share.wait_for(["fine"], ("done",), timeout=60, daemons=[daemon])


def test_a_server_that_goes_down_gets_no_tasks_until_it_answers_again(tmp_path, module_store, media):
    first, second = servers(tmp_path, 2, min_seconds=0.5)
    share = Share(tmp_path / "share")
    second.stop()  # down before the first job
    with heygem_daemon(tmp_path, share, module_store, [first, second]).start() as daemon:
        for n in ("a", "b", "c"):
            share.drop_job(n, media)
        share.wait_for(["a", "b", "c"], ("done",), timeout=90, daemons=[daemon])
        assert len(first.accepted) == 3 and second.accepted == []
        second.start()  # back: a probe finds it and it gets work again
        for n in ("d", "e", "f", "g"):
            share.drop_job(n, media)
        share.wait_for(["d", "e", "f", "g"], ("done",), timeout=90, daemons=[daemon])
    assert second.accepted, "the server that came back got tasks again"


def test_a_daemon_killed_mid_task_follows_the_task_after_its_restart_instead_of_resubmitting(
        tmp_path, module_store, media):
    (stand_in,) = servers(tmp_path, 1, min_seconds=4.0)
    share = Share(tmp_path / "share")
    daemon = heygem_daemon(tmp_path, share, module_store, [stand_in])
    daemon.start()
    try:
        share.drop_job("long", media)
        wait_until(lambda: stand_in.accepted, 60, "the task submitted", daemons=[daemon])
        daemon.kill()
        daemon.start()
        doc = share.wait_for(["long"], ("done",), timeout=90, daemons=[daemon])["long"]
    finally:
        daemon.terminate()
    assert len(stand_in.accepted) == 1  # the recorded task was queried, not submitted again
    assert download(doc["outputs"][0]["url"])


def test_the_stand_in_answers_the_protocol_quirks(tmp_path):
    """The stand-in itself: busy while a task runs, forget after the terminal answer."""
    import json
    import urllib.request

    (s,) = servers(tmp_path, 1, min_seconds=1.0)
    m = Media(tmp_path / "m", seconds=1.0)
    (s.data_dir / "in").mkdir()
    for src, name in ((m.audio, "a.wav"), (m.template, "v.mp4")):
        (s.data_dir / "in" / name).write_bytes(src.read_bytes())

    def call(path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(s.url + path, data=json.dumps(body).encode() if body else None,
                                     method="POST" if body else "GET")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    body = {"audio_url": f"{CONTAINER_DIR}/in/a.wav", "video_url": f"{CONTAINER_DIR}/in/v.mp4", "code": "t1"}
    assert call("/easy/submit", body)["code"] == 10000
    busy = call("/easy/submit", {**body, "code": "t2"})
    assert busy["code"] == 10001 and busy["success"] is True  # "success" lies
    deadline = time.monotonic() + 30
    while (answer := call("/easy/query?code=t1"))["data"]["status"] == 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert answer["data"]["status"] == 2 and answer["data"]["result"] == "temp/t1-r.mp4"
    assert call("/easy/query?code=t1")["code"] == 10004  # forgotten after the terminal answer


def test_doctor_status_and_metrics_report_each_server(tmp_path, module_store, media):
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.daemon_harness import REPO, free_port

    working, gone = servers(tmp_path, 2, min_seconds=6.0)
    gone.stop()
    share = Share(tmp_path / "share")
    port = free_port()
    daemon = heygem_daemon(tmp_path, share, module_store, [working, gone])
    daemon.config.write_text(daemon.config.read_text() + f"\n[metrics]\nenabled = true\nport = {port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    env["PYTHONPATH"] = str(REPO)

    def lipsyncd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "daemon", *args, "-c", str(daemon.config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    doctor = lipsyncd("doctor")
    name_ok, name_gone = working.url.split("//")[1], gone.url.split("//")[1]
    assert f"ok   heygem {name_ok}: {working.url} answers the gen-video protocol" in doctor.stdout
    assert f"FAIL heygem {name_gone}: {gone.url} does not answer" in doctor.stdout
    assert f"ok   heygem {name_ok}: {working.data_dir} is writable" in doctor.stdout
    with daemon.start():
        share.drop_job("busy", media)
        wait_until(lambda: working.accepted, 60, "the task submitted", daemons=[daemon])
        report = json.loads(lipsyncd("status", "--json").stdout)
        rows = {r["server"]: r for r in report["servers"]}
        assert rows[name_ok]["state"] == "busy" and rows[name_ok]["job"] == "busy"
        assert rows[name_gone]["state"] == "down"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        samples = {(s.name, s.labels.get("server")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("lipsyncd_heygem_server_busy", name_ok)] == 1
        assert samples[("lipsyncd_heygem_server_up", name_gone)] == 0
        assert samples[("lipsyncd_heygem_server_down_since_seconds", name_gone)] > time.time() - 120
        table = lipsyncd("status").stdout  # down since when, and why, as the daemon saw it
        assert f"{name_gone}  down  since 20" in table and "does not answer" in table
        share.wait_for(["busy"], ("done",), timeout=60, daemons=[daemon])


def test_a_server_restart_that_loses_the_running_task_gets_it_submitted_again(tmp_path, module_store, media):
    (stand_in,) = servers(tmp_path, 1, min_seconds=3.0, answer_delay=0.05)  # slow answers, too
    share = Share(tmp_path / "share")
    with heygem_daemon(tmp_path, share, module_store, [stand_in]).start() as daemon:
        share.drop_job("restarted", media)
        wait_until(lambda: stand_in.accepted, 60, "the task submitted", daemons=[daemon])
        stand_in.restart()  # the container restarts: the running task is gone (10004)
        doc = share.wait_for(["restarted"], ("done",), timeout=90, daemons=[daemon])["restarted"]
    assert len(stand_in.accepted) == 2  # lost once, submitted again, done
    assert doc["outputs"][0]["engine"] == "heygem"


def test_the_render_command_uses_heygem_like_any_engine(tmp_path):
    import os
    import subprocess
    import sys

    from tests.daemon_harness import REPO

    (stand_in,) = servers(tmp_path, 1, progress_style="fraction")
    m = Media(tmp_path / "m", seconds=1.0)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nstate = "state"\n[render.heygem]\npoll_interval = 0.2\n'
                   f'servers = [{{ url = "{stand_in.url}", host_dir = "{stand_in.data_dir}" }}]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "daemon", "render", str(m.audio), str(m.template), "-o",
                        str(tmp_path / "out.mp4"), "--engine", "heygem", "-c", str(cfg), "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "engine heygem" in r.stdout and probe(tmp_path / "out.mp4")["audio_codec"] == "aac"


def test_a_250_byte_job_name_goes_through_a_heygem_server(tmp_path, module_store, media):
    import os
    import shutil

    (stand_in,) = servers(tmp_path, 1)
    share = Share(tmp_path / "share")
    long = "b" * 240 + "-interview"  # 250 bytes: its task record next to the output must still fit
    with heygem_daemon(tmp_path, share, module_store, [stand_in]).start() as daemon:
        for ext, src in ((".mp4", media.template), (".wav", media.audio)):
            shutil.copyfile(src, share.inbox / ".incoming.part")
            os.replace(share.inbox / ".incoming.part", share.inbox / f"{long}{ext}")
        wait_until(lambda: any(d["state"] == "done" for d in share.sidecars().values()), 60, "the job done",
                   daemons=[daemon])
    (doc,) = share.sidecars().values()
    assert doc["outputs"][0]["engine"] == "heygem" and "File name too long" not in daemon.log_text()
