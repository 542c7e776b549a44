"""Names as long as Linux allows (255 bytes) go through the whole pipeline.

Every file name lipsyncd derives from a user's name -- sidecar, temp files, outputs,
done/failed folders, object keys -- must fit the filesystem's limit; a 250-byte drop used
to loop forever because the sidecar's temp name was longer than 255 bytes.
"""

from __future__ import annotations

import os
import shutil
import time


from tests.daemon_harness import Daemon, Media, Share, download


def test_a_250_byte_name_ends_done_with_a_stable_short_record(tmp_path, store):
    media = Media(tmp_path / "media", seconds=1.0)
    share = Share(tmp_path / "share")
    long_a = "a" * 240 + "-interview"  # 250 bytes + ".wav" = 254: legal
    long_b = "a" * 240 + "-interviex"  # differs only at the end: must get its own record
    with Daemon(tmp_path, share, store, "namer").start() as daemon:
        for stem in (long_a, long_b):
            for ext, src in ((".mp4", media.template), (".wav", media.audio)):
                tmp = share.inbox / ".incoming.part"  # the long name itself leaves no room for ".part"
                shutil.copyfile(src, tmp)
                os.replace(tmp, share.inbox / f"{stem}{ext}")
        deadline = time.monotonic() + 90
        while len([d for d in share.sidecars().values() if d["state"] in ("done", "failed")]) < 2:
            daemon.check_alive()
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.2)
        sidecars = share.sidecars()
    assert len(sidecars) == 2
    for record, doc in sidecars.items():
        assert doc["state"] == "done", doc.get("error")
        assert len(f"{record}.json".encode()) <= 255 and record == doc["job"]
        original = next(n for n in (long_a, long_b) if doc["inputs"]["audio"]["name"] == f"{n}.wav")
        assert any(original in note for note in doc["notes"])  # the original name is kept
        (out,) = doc["outputs"]
        assert len(out["name"].encode()) <= 255 and len(out["key"]) < 1024
        assert download(out["url"])
        assert (share.root / "done" / record / f"{original}.wav").is_file()  # inputs under their own names
    assert share.leftovers() == [] and share.work_jobs() == []
    assert "File name too long" not in daemon.log_text()
