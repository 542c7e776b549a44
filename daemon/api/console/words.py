"""The console's words that come from data, not from a template: state names, the choices
of the New job form, and the live texts of its script. Each is English here (marked for
the catalog) and translated per request; the values behind them never change."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from daemon.i18n import N_, translations

# what a person reads for a state (every job and output state: tests/test_i18n.py); the page
# keeps the state itself in data-state and its class
STATE_NAMES: dict[str, str] = {
    "waiting": N_("waiting"), "queued": N_("queued"), "rendering": N_("rendering"), "uploading": N_("uploading"),
    "done": N_("done"), "failed": N_("failed"), "expired": N_("expired"),
    "pending": N_("pending"), "rendered": N_("rendered"),
}

# choices of the New job form that are words (engine names, sizes and ratios stay as written)
CHOICE_NAMES: dict[str, str] = {
    "auto": N_("auto (the best this server has)"), "keep": N_("keep"),
    "soft": N_("soft (a track viewers switch on)"), "burn": N_("burn (into the picture)"), "off": N_("off"),
    "top-left": N_("top left"), "top-right": N_("top right"), "bottom-left": N_("bottom left"),
    "bottom-right": N_("bottom right"), "center": N_("centre"),
}

# the script's live texts: key -> message ({name} placeholders are filled in by the script)
SCRIPT_MESSAGES: dict[str, str] = {
    "retry": N_("Retry"),
    "delete": N_("Delete videos"),
    "confirm_delete": N_("Delete this job's videos? Their links stop working."),
    "confirm_cancel": N_("Cancel this job?"),
    "retried": N_("Dropped into the inbox again…"),
    "copied": N_("Copied"),
    "copy_link": N_("Copy link"),
    "upload_failed": N_("The upload failed (network)."),
    "need_audio": N_("Add an audio file, or write the text to speak."),
    "need_template": N_("Add at least one template: a video or photo, or one from the library."),
    "confirm_delete_template": N_("Delete {name} from the library?"),
    "no_daemon": N_("no daemon has been seen on the share"),
    "daemon_rendering": N_("{host} ({engine}): rendering {jobs} · seen {seconds} s ago"),
    "daemon_idle": N_("{host} ({engine}): idle · seen {seconds} s ago"),
    "daemon_gone": N_("{host} ({engine}): not seen for {seconds} s"),
    "heygem": N_("HeyGem {server}: {state}"),
    "heygem_job": N_("HeyGem {server}: {state} {job}"),
    "store_ok": N_("store: reachable"),
    "store_down": N_("store: {detail}"),
    "queue": N_("queue: {count}"),
    "status_unavailable": N_("Service status unavailable: {message}"),
    "http_error": N_("HTTP error {status}"),
}


# what DELETE /api/v1/jobs/NAME answers in "action", as the script says it
ACTION_NAMES: dict[str, str] = {
    "withdrawn": N_("withdrawn from the inbox"), "cancel_requested": N_("cancel requested"),
    "deleted": N_("videos deleted"), "already_deleted": N_("the videos were already deleted"),
}

# what a library template is (daemon.api.library's "kind")
KIND_NAMES: dict[str, str] = {"photo": N_("photo"), "video": N_("video")}

# a HeyGem server's state in the health strip
SERVER_STATES: dict[str, str] = {"idle": N_("idle"), "busy": N_("busy"), "down": N_("down")}


@lru_cache(maxsize=None)
def script_messages(lang: str) -> dict[str, Any]:
    """What the page hands its script in one language: the live texts and the names, translated."""
    _ = translations(lang).gettext
    return {**{k: _(v) for k, v in SCRIPT_MESSAGES.items()},
            "states": {k: _(v) for k, v in STATE_NAMES.items()},
            "actions": {k: _(v) for k, v in ACTION_NAMES.items()},
            "servers": {k: _(v) for k, v in SERVER_STATES.items()}}
