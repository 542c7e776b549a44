"""The job record: the sidecar ``outbox/NAME.json`` that users read, owned by this module alone.

Two kinds of writers touch a sidecar, and each goes through one door here:

* :class:`Sidecar` -- the record of one run of a job, written only by the daemon that owns
  the job. Its methods are the transitions (``queued``, ``rendering``, ``output_rendered``,
  ``upload_waiting``, ``done``, ``failed`` ...); each one checks the document against
  ``daemon/outbox/sidecar.schema.json`` and writes it atomically.
* :class:`Outbox` -- the folder: one :meth:`Outbox.scan` per pass for status, metrics, link
  refresh and cleanup, and :meth:`Outbox.replace_if_unchanged` for their edits of finished
  records (a re-signed link, an expired video).

Nothing lost, nothing twice -- the rules every write obeys:

1. **Fenced writes.** The owner's new document is written to a temp file *inside the job's
   work folder* and renamed from there over the sidecar. A takeover renames that folder
   into the taker's work area, so a daemon that was frozen and wakes up after losing its
   job cannot write any more: ``rename(2)`` resolves the source path atomically, and the
   path no longer exists (ENOENT). There is no window between an ownership check and the
   write it guards, because the write *is* the check.
2. **Generations.** Each claim starts at generation 1 and each takeover adds one (kept in
   the lease, stamped into the sidecar). A write whose generation is older than the one
   on disk is refused: a second line of defence where a network filesystem's caches
   could let a stale rename through (see docs/multihost.md).
3. **Final is final.** A record in ``done``, ``failed`` or ``expired`` is never rewritten to
   an earlier state by anyone: ``done`` may only become ``expired`` (or stay ``done`` with a
   fresh link).

A refused write raises :class:`RecordFenced`; the caller drops the job without writing.
"""

from daemon.outbox.folder import Entry, Outbox, Reservation
from daemon.outbox.record import (ACTIVE_STATES, FINAL_STATES, SCHEMA_ID, OutputState, RecordFenced,
                                  State, expire_output, initial_document, isotime, name_notes,
                                  note_links_refreshed, orphaned, parse_time, read_document, relink_output, schema_text,
                                  utcnow, validate)
from daemon.outbox.sidecar import FENCE_TEMP_PREFIX, PROGRESS_WRITE_INTERVAL, Sidecar, fenced_replace

__all__ = [
    "ACTIVE_STATES", "FENCE_TEMP_PREFIX", "FINAL_STATES", "PROGRESS_WRITE_INTERVAL", "SCHEMA_ID",
    "Entry", "Outbox", "OutputState", "RecordFenced", "Reservation", "Sidecar", "State", "expire_output",
    "fenced_replace", "initial_document", "isotime", "name_notes", "note_links_refreshed", "orphaned",
    "parse_time", "read_document", "relink_output", "schema_text", "utcnow", "validate",
]
