"""Job manifests (``NAME.job.toml`` / ``NAME.job.json``) and the confinement of the paths
they name.

A manifest names one audio file and one or more templates, plus per-job options::

    audio = "speech.mp3"
    templates = ["anna.mp4", "ben.jpg"]
    output_name = "welcome"        # optional, default: NAME
    link_lifetime = "3d"           # optional: seconds or "90s", "15m", "12h", "7d"
    engine = "warp"                # optional: auto | warp | wav2lip | passthrough
    callback_url = "https://..."   # optional webhook for this job
    priority = 10                  # optional: higher runs first (-100..100, default 0)
    resolution = "1080p"           # optional finishing, defaults in [output]: resolution, aspect,
    aspect = "9:16"                #   fps, watermark, intro, outro, subtitles (soft | burn | off)
    subtitle_file = "welcome.srt"  # optional: .srt / .vtt in the inbox (NAME.srt is found by itself)
    text = "Hello!"                # instead of audio: spoken by [tts] (voice = "..." for this job)

The options are defined once, in :mod:`daemon.joboptions`, for every door a job enters by.
:func:`parse_manifest` checks everything it can without touching other files and raises
one :class:`BadManifestError` that lists every problem. :class:`PathRules` then locates
each named file: relative paths only, inside the inbox (audio and templates) or the
template library (templates, looked up after the inbox), never through ``..``, a
dot-folder, a symlink that leaves its root, or the daemon's own folders.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.confine import NameRefused, confine, name_parts
from daemon.errors import BadManifestError, PathOutsideInboxError, PermanentJobError
from daemon.names import file_kind, job_stem
from daemon.jobs import SYMLINK_INPUT, JobOptions
from daemon.joboptions import KEYS as OPTION_KEYS, judge

MAX_MANIFEST_BYTES = 1024 * 1024

_KEYS = ("audio", "templates", *OPTION_KEYS)  # the options: daemon.joboptions, one definition for every door


@dataclass(frozen=True)
class Manifest:
    """A syntactically valid manifest; the paths are as written, not yet located."""

    path: Path
    name: str  # job name: NAME of NAME.job.toml
    audio: str
    templates: list[str]
    options: JobOptions


def parse_manifest(path: Path, *, max_templates: int = 100) -> Manifest:
    """Read and check ``path``; raise BadManifestError listing every problem at once."""
    try:
        # O_NOFOLLOW: a manifest swapped for a symlink after the scan must not be read;
        # O_NONBLOCK: a FIFO with a manifest's name must not hang the scan
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise BadManifestError(f"{path.name}: cannot read the manifest: {e.strerror}", file=path.name) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BadManifestError(f"{path.name}: the manifest is not a regular file", file=path.name)
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest_bytes(path, data, max_templates=max_templates)


def parse_manifest_bytes(path: Path, data: bytes, *, max_templates: int = 100) -> Manifest:
    name = path.name
    if len(data) > MAX_MANIFEST_BYTES:
        _fail(name, [f"the manifest is larger than {MAX_MANIFEST_BYTES // 1024} KiB"])
    try:
        text = data.decode("utf-8-sig")  # editors on Windows like to add a BOM
    except UnicodeDecodeError as e:
        _fail(name, [f"not UTF-8 text (byte {e.start})"])
    raw = _load(name, text)
    problems: list[str] = []
    for key in raw:
        if key not in _KEYS:
            close = [k for k in _KEYS if k[:3] == str(key)[:3]]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: unknown key{hint}; allowed: {', '.join(_KEYS)}")

    if raw.get("text") is not None and raw.get("audio") is not None:
        problems.append("audio and text: give one of them (text is spoken with the configured voice)")
    audio = _check_audio(raw.get("audio"), problems) if raw.get("text") is None else ""
    templates = _check_templates(raw.get("templates"), max_templates, problems)
    kept, found = judge(raw)
    problems.extend(message for _, message in found)
    options = JobOptions(**kept)
    if problems:
        _fail(name, problems, refs=named_files(raw))
    return Manifest(path=path, name=job_stem(name), audio=audio, templates=templates, options=options)


def named_files(raw: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(field, name, is a template) of every inbox file a manifest names, read leniently:
    a refused manifest still takes the files it names along to failed/ (none of them may
    be rendered without it)."""
    refs: list[tuple[str, str, bool]] = []
    if isinstance(raw.get("audio"), str):
        refs.append(("audio", raw["audio"], False))
    templates = raw.get("templates")
    templates = [templates] if isinstance(templates, str) else templates
    if isinstance(templates, list):
        refs += [(f"templates[{i}]", t, True) for i, t in enumerate(templates) if isinstance(t, str)]
    if isinstance(raw.get("subtitle_file"), str):
        refs.append(("subtitle_file", raw["subtitle_file"], False))
    return refs


def _fail(name: str, problems: list[str], *, refs: list[tuple[str, str, bool]] | None = None) -> None:
    """Raise the manifest's BadManifestError; ``refs`` the files it names (None: unreadable)."""
    count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
    err = BadManifestError(f"{name}: {count}: " + "; ".join(problems), file=name)
    err.problems = tuple(problems)
    err.refs = refs
    raise err


def _load(name: str, text: str) -> dict[str, Any]:
    if name.lower().endswith(".json"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            _fail(name, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"])
        if not isinstance(raw, dict):
            _fail(name, [f"the manifest must be a JSON object, not {type(raw).__name__}"])
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        _fail(name, [f"not valid TOML: {e}"])
    raise AssertionError("unreachable")


def _check_name(value: str, where: str, kind: str, problems: list[str]) -> bool:
    if not value.strip():
        problems.append(f"{where}: must not be empty")
        return False
    if "\x00" in value:
        problems.append(f"{where}: contains a NUL character")
        return False
    if file_kind(value.replace("\\", "/").rsplit("/", 1)[-1]) != kind:
        what = "an audio file (wav, mp3, m4a, flac, ogg, aac)" if kind == "audio" else \
            "a template (mp4, mov, mkv, webm, png, jpg, jpeg)"
        problems.append(f"{where}: {value!r} is not {what}")
        return False
    return True


def _check_audio(value: Any, problems: list[str]) -> str:
    if value is None:
        problems.append("audio: missing (name the audio file, e.g. audio = \"speech.mp3\", or give text = \"...\")")
        return ""
    if not isinstance(value, str):
        problems.append(f"audio: expected a file name string, got {type(value).__name__}")
        return ""
    _check_name(value, "audio", "audio", problems)
    return value


def _check_templates(value: Any, max_templates: int, problems: list[str]) -> list[str]:
    if value is None:
        problems.append("templates: missing (e.g. templates = [\"anna.mp4\"])")
        return []
    if isinstance(value, str):
        problems.append(f"templates: expected a list of file names, got a string (write templates = [{value!r}])")
        return []
    if not isinstance(value, list):
        problems.append(f"templates: expected a list of file names, got {type(value).__name__}")
        return []
    if not value:
        problems.append("templates: the list is empty")
    if len(value) > max_templates:
        problems.append(f"templates: {len(value)} templates, more than the limit of {max_templates}")
    out: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"templates[{i}]"
        if not isinstance(item, str):
            problems.append(f"{where}: expected a file name string, got {type(item).__name__}")
            continue
        if _check_name(item, where, "template", problems):
            if item in seen:
                problems.append(f"{where}: {item!r} is listed twice")
            seen.add(item)
        out.append(item)
    return out


# --------------------------------------------------------------------------- confinement


@dataclass(frozen=True)
class Located:
    """A manifest path found on disk."""

    path: Path  # root / relative name (not symlink-resolved: this is what is renamed)
    name: str  # relative name with "/" separators, as recorded in job.json and sidecars
    library: bool  # True: in the template library (read in place, never moved)


class PathRules:
    """Where manifest paths may point: the inbox and the template library, nothing else."""

    def __init__(self, cfg: Config):
        self.inbox = cfg.paths.inbox
        self.library = cfg.paths.templates
        # the daemon's own folders may sit inside the inbox; nothing in them is a drop
        self._reserved = [(cfg.work_dir, "the work area of claimed jobs"),
                          (cfg.paths.done, "the done folder"), (cfg.paths.failed, "the failed folder"),
                          (cfg.paths.outbox, "the outbox"), (cfg.paths.state, "the state folder")]

    def locate(self, ref: str, *, manifest: str, field: str, template: bool) -> Located | None:
        """Find ``ref``; None when it is in neither place (yet).

        Raises PathOutsideInboxError for a path that may not be used, wherever it points,
        and a PermanentJobError for a symlinked or non-regular inbox file.
        """
        parts = _split_relative(ref, manifest=manifest, field=field)
        found = self._check_under(self.inbox, parts, ref, manifest=manifest, field=field, library=False)
        if found is None and template:
            found = self._in_library(parts, ref, manifest=manifest, field=field)
        return found

    def in_library(self, ref: str, *, manifest: str, field: str) -> Located | None:
        """``ref`` in the template library only (clips, watermarks, ``template_name``), by the
        same rules; None when there is no library or no such file."""
        return self._in_library(_split_relative(ref, manifest=manifest, field=field), ref, manifest=manifest,
                                field=field)

    def _in_library(self, parts: list[str], ref: str, *, manifest: str, field: str) -> Located | None:
        if self.library is None:
            return None
        return self._check_under(self.library, parts, ref, manifest=manifest, field=field, library=True)

    def _check_under(self, root: Path, parts: list[str], ref: str, *, manifest: str, field: str,
                     library: bool) -> Located | None:
        candidate = root.joinpath(*parts)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        where = "template library" if library else "inbox"
        try:
            confine(root, "/".join(parts), nested=True, where=where)
        except NameRefused as e:
            raise PathOutsideInboxError(f"{manifest}: {field} {ref!r} {e.reason}", file=manifest) from None
        real = Path(os.path.realpath(candidate))
        real_root = Path(os.path.realpath(root))
        for folder, what in self._reserved:
            real_folder = Path(os.path.realpath(folder))
            if real.is_relative_to(real_folder) and not real_root.is_relative_to(real_folder):
                raise PathOutsideInboxError(f"{manifest}: {field} {ref!r} points into {what}", file=manifest)
        if stat.S_ISLNK(st.st_mode) and not library:
            # renaming a link would move the link, not the file it names
            raise PermanentJobError(f"{manifest}: {field} {ref!r} is a symbolic link; drop the file itself",
                                    code=SYMLINK_INPUT, file=manifest)
        try:
            target_mode = os.stat(candidate).st_mode
        except FileNotFoundError:  # a dangling link in the library: not there (yet)
            return None
        if not stat.S_ISREG(target_mode):
            raise BadManifestError(f"{manifest}: {field} {ref!r} is not a regular file", file=manifest)
        return Located(path=candidate, name="/".join(parts), library=library)


def _split_relative(ref: str, *, manifest: str, field: str, where: str = "inbox") -> list[str]:
    try:
        return name_parts(ref, nested=True, where=f"{where} or the template library" if where == "inbox" else where)
    except NameRefused as e:
        if e.reason == "is empty":
            raise BadManifestError(f"{manifest}: {field} is empty", file=manifest) from None
        raise PathOutsideInboxError(f"{manifest}: {field} {ref!r} {e.reason}", file=manifest) from None
