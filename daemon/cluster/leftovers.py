"""Temp files that a daemon killed in the middle of a write leaves in the shared outbox.

Housekeeping edits of finished sidecars (:meth:`daemon.outbox.Outbox.replace_if_unchanged`)
are written to a temp file beside the target and renamed over it, so readers never see
half a document; the owner's own writes go through a temp file in the job's work folder,
which leaves with that folder. A daemon killed between the two steps leaves the temp file
behind. Any daemon sharing the outbox may
remove such a file once it is clearly abandoned: older, by the share's clock, than any
write takes. A live writer holds its temp file for milliseconds; one that stalls longer
than ``older_than`` loses its write (the rename fails) and retries, which is harmless.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from daemon.config import Config
from daemon.cluster.lease import share_now
from daemon.logsetup import get_logger

log = get_logger(__name__)

# daemon.atomic.write_atomic names the temp files of a sidecar ".<NAME>.json.<mkstemp suffix>.tmp"
SIDECAR_TEMP_RE = re.compile(r"^\..+\.json\.[A-Za-z0-9_]+\.tmp$")


def sweep_outbox(cfg: Config, *, older_than: float, now: float | None = None) -> list[Path]:
    """Remove abandoned sidecar temp files from the outbox; the ones removed."""
    outbox = cfg.paths.outbox
    if now is None:
        now = share_now(cfg)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(outbox))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not SIDECAR_TEMP_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if age <= older_than:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # its writer finished after all, or another daemon swept it
        removed.append(Path(entry.path))
    if removed:
        log.info("removed abandoned sidecar temp files", count=len(removed), names=[p.name for p in removed[:10]])
    return removed
