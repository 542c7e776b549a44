"""Credentials and links stay out of logs, sidecars, error messages and the process list.

A real daemon does real work (a good job, a broken one, a job whose webhook carries a
token, uploads refused for a wrong secret) and then everything it wrote is searched.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path


from daemon.storage.credentials import load_or_create
from tests.daemon_harness import Daemon, Share, free_port, wait_until
from tests.hostile_media import text_file

SIGNATURE_RE = re.compile(r"X-Amz-(Signature|Credential)=", re.I)
HOOK_TOKEN = "hooktoken-5f1c2a9e"


def process_texts(pid: int) -> str:
    """What `ps`, `top` and /proc show about a process to other users."""
    parts = []
    for name in ("cmdline", "comm", "stat"):
        try:
            parts.append(Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except FileNotFoundError:
            pass
    return "\n".join(parts)


def child_pids(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return out


def everything_written(share: Share, daemon: Daemon) -> dict[str, str]:
    texts = {"log": daemon.log_text()}
    for p in share.root.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".toml", ".log", ""):
            texts[str(p.relative_to(share.root))] = p.read_text(errors="replace")
    return texts


def test_no_secret_or_link_leaks_while_working(tmp_path, store, media):
    share = Share(tmp_path / "share")
    daemon = Daemon(tmp_path, share, store, "secrets",
                    extra={"notify": {"webhooks": [{"url": f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}"}],
                                      "timeout": 1, "retries": 0}})
    secret = store.credentials.secret_key
    with daemon.start():
        share.drop_job("good", media)
        share.drop("broken.mp4", media.template)
        text_file(share.inbox / "broken.wav")
        share.drop("hooked.wav", media.audio)
        share.drop("hooked.mp4", media.template)
        share.drop("hooked.job.toml", f'audio = "hooked.wav"\ntemplates = ["hooked.mp4"]\n'
                   f'callback_url = "http://127.0.0.1:9/cb?token={HOOK_TOKEN}"\n'.encode())
        docs = share.wait_for(["good", "broken", "hooked"], timeout=60, daemons=[daemon])
        texts = process_texts(daemon.pid)
        texts += "".join(process_texts(c) for c in child_pids(daemon.pid))
    assert docs["good"]["state"] == "done" and docs["hooked"]["state"] == "done"
    assert docs["broken"]["state"] == "failed"

    assert secret not in texts
    written = everything_written(share, daemon)
    for where, text in written.items():
        assert secret not in text, where
    log = written["log"]
    # links are bearer tokens: the log names bucket and key, never the signed URL
    assert not SIGNATURE_RE.search(log)
    for doc in docs.values():
        for out in doc["outputs"]:
            if out.get("url"):
                assert out["url"] not in log
                assert out["key"] in log
    assert HOOK_TOKEN not in log


def test_wrong_secret_errors_do_not_echo_it(tmp_path, store, media):
    share = Share(tmp_path / "share")
    wrong = "WrongSecretKey/abcdefghijklmnopqrstuvwx"
    daemon = Daemon(tmp_path, share, store, "wrong-secret", env={"AWS_SECRET_ACCESS_KEY": wrong})
    with daemon.start():
        share.drop_job("denied", media)
        doc = wait_until(lambda: (d := share.sidecar("denied")) and (d.get("upload") or {}).get("last_error") and d,
                         60, "a refused upload", daemons=[daemon])
    assert doc["state"] == "uploading"
    for where, text in everything_written(share, daemon).items():
        assert wrong not in text, where
        assert store.credentials.secret_key not in text, where


def test_files_the_daemon_creates_have_private_modes(tmp_path, media):
    """Embedded store: generated credentials 0600 in a 0700 state folder, none on weed's command line."""
    share = Share(tmp_path / "share")
    state = tmp_path / "state"
    daemon = Daemon(tmp_path, share, None, "embedded",
                    extra={"storage": {"mode": "embedded", "endpoint": ""}, "paths": {"state": str(state)},
                           "storage.embedded": {"port": free_port()}})
    with daemon.start():
        share.drop_job("local", media)
        share.wait_for(["local"], ("done",), timeout=90, daemons=[daemon])
        creds_file = state / "s3-credentials.json"
        secret = load_or_create(state).secret_key
        shown = process_texts(daemon.pid) + "".join(process_texts(c) for c in child_pids(daemon.pid))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert secret not in shown
    for where, text in everything_written(share, daemon).items():
        assert secret not in text, where
    # results on the share are readable by the team, not writable by everyone
    side = share.outbox / "local.json"
    assert stat.S_IMODE(side.stat().st_mode) & 0o002 == 0
    assert os.access(side, os.R_OK)
