"""The inbox watcher: filesystem detection, and real observers waking the worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.errors import ConfigError
from daemon.intake.watch import InboxWatcher, choose_mode, detect_fs_type, parse_mounts

MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 / ext4 rw,relatime 0 0
/dev/sda2 /srv ext4 rw,relatime 0 0
filer:/export/share /srv/share nfs4 rw,vers=4.2,hard 0 0
//nas/media\\040team /srv/media\\040team cifs rw,vers=3.0 0 0
/dev/sdb1 /srv/share-local xfs rw 0 0
"""


def make_cfg(root: Path, **watch) -> config_mod.Config:
    (root / "inbox").mkdir(exist_ok=True)
    raw = {"paths": {"inbox": "inbox", "state": "state"},
           "watch": {"settle_seconds": 0, "rescan_interval": 60, "poll_interval": 0.1, **watch}}
    return config_mod.from_dict(raw, base=root)


def test_parse_mounts_decodes_escaped_blanks():
    mounts = parse_mounts(MOUNTS)
    assert ("/srv/media team", "cifs") in mounts and ("/srv/share", "nfs4") in mounts


@pytest.mark.parametrize("path,fs_type", [
    ("/srv/share/lipsync/inbox", "nfs4"),
    ("/srv/share", "nfs4"),
    ("/srv/share-local/inbox", "xfs"),  # a longer name, not a sub-folder of /srv/share
    ("/srv/media team/inbox", "cifs"),
    ("/srv/other", "ext4"),
    ("/home/me/inbox", "ext4"),
])
def test_fs_type_is_the_longest_mount_point_holding_the_path(path, fs_type):
    assert detect_fs_type(Path(path), MOUNTS) == fs_type


def test_later_mount_on_the_same_point_wins():
    text = MOUNTS + "filer2:/x /srv nfs rw 0 0\n"
    assert detect_fs_type(Path("/srv/other"), text) == "nfs"


def test_mode_follows_filesystem_unless_forced(tmp_path):
    auto = make_cfg(tmp_path)
    assert choose_mode(auto, "nfs4") == "polling"
    assert choose_mode(auto, "fuse.sshfs") == "polling"
    assert choose_mode(auto, "ext4") == "native"
    assert choose_mode(make_cfg(tmp_path, mode="native"), "nfs4") == "native"
    assert choose_mode(make_cfg(tmp_path, mode="polling"), "ext4") == "polling"


def test_inbox_on_a_network_mount_is_polled(tmp_path):
    cfg = make_cfg(tmp_path)
    fake = f"/dev/sda1 / ext4 rw 0 0\nfiler:/e {tmp_path.resolve()} nfs rw 0 0\n"
    watcher = InboxWatcher(cfg, mounts_text=fake)
    assert (watcher.fs_type, watcher.mode) == ("nfs", "polling")


def seconds_until_woken(watcher: InboxWatcher, action, limit: float = 5.0) -> float:
    assert watcher.wait(0) is True  # the start-up scan
    assert watcher.wait(0.3) is False  # quiet inbox: nothing to do
    action()
    start = time.monotonic()
    assert watcher.wait(limit) is True
    return time.monotonic() - start


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_new_file_wakes_the_worker_quickly(tmp_path, mode):
    cfg = make_cfg(tmp_path, mode=mode)
    with InboxWatcher(cfg) as watcher:
        assert watcher.mode == mode
        took = seconds_until_woken(watcher, lambda: (cfg.paths.inbox / "talk.wav").write_bytes(b"x"))
    assert took < 3.0


def test_copy_tool_temp_files_do_not_wake_but_their_rename_does(tmp_path):
    cfg = make_cfg(tmp_path, mode="native")
    part = cfg.paths.inbox / "talk.wav.part"
    with InboxWatcher(cfg) as watcher:
        assert watcher.wait(0) is True
        part.write_bytes(b"x" * 1000)
        with open(part, "ab") as fh:
            fh.write(b"y")
        assert watcher.wait(0.5) is False
        part.rename(cfg.paths.inbox / "talk.wav")
        assert watcher.wait(3) is True


def test_wakes_again_when_a_change_has_settled(tmp_path):
    # a settle window of 1 s keeps the event wake-up and the settle wake-up apart even
    # on a loaded machine
    cfg = make_cfg(tmp_path, mode="native", settle_seconds=1.0)
    with InboxWatcher(cfg) as watcher:
        assert watcher.wait(0) is True
        start = time.monotonic()
        (cfg.paths.inbox / "a.wav").write_bytes(b"x")
        wakes = []
        while (elapsed := time.monotonic() - start) < 3.0:
            if watcher.wait(3.0 - elapsed):
                wakes.append(time.monotonic() - start)
    assert wakes and wakes[0] < 1.0  # the file events (coalesced)
    # then once more when the file has had settle_seconds to settle: time to scan again
    assert any(1.0 <= w < 2.5 for w in wakes) and len(wakes) <= 4


def test_periodic_rescan_is_reported(tmp_path):
    cfg = make_cfg(tmp_path, mode="native", rescan_interval=1)
    with InboxWatcher(cfg) as watcher:
        assert watcher.wait(0) is True
        start = time.monotonic()
        assert watcher.wait(3) is True
        assert 0.8 < time.monotonic() - start < 2.8


def test_missing_inbox_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.paths.inbox = tmp_path / "not-mounted"
    with pytest.raises(ConfigError, match="not-mounted does not exist"):
        InboxWatcher(cfg).start()
