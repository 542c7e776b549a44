"""The inbox scanner: which drops are complete jobs, which are still arriving, which failed.

Rules, in the order they apply:

* Only the top level of the inbox is scanned. Dot-files, dot-folders (the daemon's own
  ``.lipsyncd/``), the temporary names of copy tools (``*.part``, ``*.tmp``,
  ``*.crdownload``, ``~$*``, ``*.swp``), README files and non-media files are ignored.
  Files in sub-folders are used only when a manifest names them.
* A file is complete once its size and mtime have not changed for
  ``watch.settle_seconds`` of scan time. A job is ready only when all its files are.
* A manifest ``NAME.job.toml`` / ``NAME.job.json`` makes the job ``NAME`` from the files it
  names; those files are never paired by stem as well. While a manifest ``NAME`` is in
  the inbox, same-stem files called ``NAME.*`` that it does not name wait for it to go.
* Otherwise files pair by stem (case-sensitive; the extension is not): ``talk.wav`` +
  ``talk.mp4`` is the job ``talk``.
* Ambiguity is an error, never a guess: two audios or two templates with one stem, two
  manifests with one name, or an inbox file named by two manifests fail those jobs.
* A lone file (no partner file present at all, not even one still being copied) waits
  ``watch.partner_grace``, counted from the last time a file of the job settled, then
  fails with MissingPartnerError.
* A symlink is never read: its job fails with a ``symlink_input`` error. A FIFO, socket
  or device named like media is never opened either: its job fails as ``bad_media``.

Failed jobs come back as specs with ``error`` set and every file of the drop in
``files``, so they are claimed and moved to failed/ like any other job.
"""

from __future__ import annotations

import os
import stat
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Config, format_duration
from daemon.errors import BadManifestError, JobError, MissingPartnerError, PermanentJobError
from daemon.jobs import SYMLINK_INPUT, JobOptions, JobSpec, ambiguous_job_error
from daemon.logsetup import get_logger
from daemon.intake.manifest import Manifest, PathRules, parse_manifest
from daemon.intake.references import manifest_refs, near_misses, normal_ref
from daemon.names import (audio_names_hint, file_kind, is_readme, is_temporary_name, is_text, job_stem,
                                 template_names_hint)

log = get_logger(__name__)


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # scan time at which this (size, mtime) was first observed
    is_link: bool
    special: str | None = None  # "a FIFO", "a socket", ...: not a regular file, never read


class Inbox:
    """Keeps per-file observations across scans; ``scan(now)`` is deterministic in ``now``."""

    def __init__(self, cfg: Config, *, settled_by_mtime: bool = False):
        """``settled_by_mtime``: a file first seen counts as unchanged since its mtime, so that
        one scan can tell settled files apart (``lipsyncd status``); the daemon judges by
        its own clock over successive scans, which network filesystems' mtimes cannot skew."""
        self.cfg = cfg
        self.settled_by_mtime = settled_by_mtime
        self.waiting: list[Waiting] = []  # drops of the last scan that are not jobs yet
        self.root = cfg.paths.inbox
        self.settle = float(cfg.watch.settle_seconds)
        self.grace = float(cfg.watch.partner_grace)
        self.max_templates = cfg.limits.max_templates_per_job
        self.rules = PathRules(cfg)
        self._seen: dict[tuple[bool, str], _Seen] = {}
        self._manifests: dict[str, tuple[int, int, Manifest | BadManifestError]] = {}
        self._logged: set[str] = set()
        self._deadline: float | None = None
        self._touched: set[tuple[bool, str]] = set()
        self._suggested: dict[str, str] = {}  # manifest reference -> the inbox file it likely means

    # ------------------------------------------------------------------ public

    def scan(self, now: float | None = None) -> list[JobSpec]:
        """Every job that is ready now (including failed ones), in the order they run: by
        priority (raised by waiting, see :meth:`JobSpec.rank`), then oldest first."""
        now = time.time() if now is None else now
        self._deadline = None
        self._touched = set()
        self.waiting = []
        top = self._list_top(now)
        manifests = {n: k for n, k in top.items() if k == "manifest"}
        specs, reserved, manifest_names = self._manifest_jobs(manifests, top, now)
        media = {n: k for n, k in top.items() if k != "manifest" and n not in reserved}
        specs += self._stem_jobs(media, manifest_names, now)
        for key in set(self._seen) - self._touched:
            del self._seen[key]
        for name in set(self._manifests) - set(manifests):
            del self._manifests[name]
        aging = float(self.cfg.watch.priority_aging)
        specs.sort(key=lambda s: s.rank(now, aging))
        return specs

    def next_deadline(self) -> float | None:
        """Scan-clock time at which the last scan's waiting files settle or a grace ends.

        The worker may scan again then rather than waiting for the next rescan.
        """
        return self._deadline

    # ------------------------------------------------------------------ observation

    def _list_top(self, now: float) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            log.warning("inbox missing", inbox=str(self.root))
            return found
        present = set()
        for entry in entries:
            name = entry.name
            present.add(name)
            if is_temporary_name(name) or is_readme(name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            kind = file_kind(name)
            if kind is None:
                self._log_once(name, "inbox file ignored", reason="not an audio, template or manifest file")
                continue
            if self._observe((False, name), now) is None:
                continue
            found[name] = kind
        self._logged &= present
        return found

    def _observe(self, key: tuple[bool, str], now: float) -> _Seen | None:
        root = self.cfg.paths.templates if key[0] else self.root
        try:
            st = os.lstat(root / key[1])  # type: ignore[operator]
        except OSError:
            return None
        is_link = stat.S_ISLNK(st.st_mode)
        special = None if is_link or stat.S_ISREG(st.st_mode) else _special_kind(st.st_mode)
        if special is not None and key[1] not in self._logged:
            # a FIFO would block whoever reads it: it is failed as bad media, never opened
            self._logged.add(key[1])
            log.warning("inbox file is not a regular file; its job fails", file=key[1], kind=special)
        self._touched.add(key)
        old = self._seen.get(key)
        if old is None or (old.size, old.mtime_ns, old.is_link) != (st.st_size, st.st_mtime_ns, is_link):
            since = min(now, st.st_mtime_ns / 1e9) if self.settled_by_mtime and old is None else now
            old = self._seen[key] = _Seen(st.st_size, st.st_mtime_ns, since, is_link, special)
        return old

    def _stable(self, key: tuple[bool, str], now: float) -> bool:
        seen = self._seen[key]
        due = seen.since + self.settle
        if now >= due:
            return True
        self._wake_at(due)
        return False

    def _wake_at(self, t: float) -> None:
        if self._deadline is None or t < self._deadline:
            self._deadline = t

    def _log_once(self, name: str, event: str, **kw: str) -> None:
        if name not in self._logged:
            self._logged.add(name)
            log.debug(event, file=name, **kw)

    def _note_waiting(self, job: str, keys: list[tuple[bool, str]], reason: str, until: float) -> None:
        self.waiting.append(Waiting(job, tuple(k[1] for k in keys if not k[0]), reason, until))

    def _settled_at(self, keys: list[tuple[bool, str]]) -> float:
        return max(self._seen[k].since for k in keys) + self.settle

    # ------------------------------------------------------------------ manifests

    def _manifest_jobs(self, manifests: dict[str, str], top: dict[str, str], now: float
                       ) -> tuple[list[JobSpec], set[str], set[str]]:
        """Jobs from manifests, the inbox names they reserve, and the job names they take."""
        parsed: dict[str, Manifest | BadManifestError] = {n: self._parse(n) for n in manifests}
        by_name: dict[str, list[str]] = defaultdict(list)
        for n in manifests:
            by_name[job_stem(n)].append(n)
        claimers: dict[str, list[str]] = defaultdict(list)  # inbox name -> valid manifests naming it
        refused: dict[str, list[str]] = defaultdict(list)  # ... and refused ones: they take what nobody else does
        for n, m in parsed.items():
            for _, ref, _ in manifest_refs(m):
                (claimers if isinstance(m, Manifest) else refused)[normal_ref(ref)].append(n)
        reserved = set(claimers) | set(refused)
        # a manifest that could not be read names nothing we know of: the files of its stem
        # are its drop, and go with it
        for n, m in parsed.items():
            if isinstance(m, BadManifestError) and m.refs is None:
                reserved |= {f for f, kind in top.items() if kind != "manifest" and job_stem(f) == job_stem(n)}
        # a name a manifest gets wrong ("portrait.jpg" for portrait.jpeg): the file meant is
        # part of that job, never a lone job of its own, and the job fails at once saying so
        self._suggested = near_misses(parsed, top, claimers, self.cfg.paths.templates)
        reserved |= set(self._suggested.values())

        specs: list[JobSpec] = []
        for job, names in sorted(by_name.items()):
            if len(names) > 1:
                spec = self._failed_if_settled(job, names, ambiguous_job_error(
                    f"{' and '.join(sorted(names))}: two manifests for the job {job!r}; keep one", file=names[0]), now)
            else:
                spec = self._manifest_job(names[0], parsed[names[0]], claimers, now)
            if spec is not None:
                specs.append(spec)
        return specs, reserved, set(by_name)

    def _parse(self, name: str) -> Manifest | BadManifestError:
        seen = self._seen[(False, name)]
        cached = self._manifests.get(name)
        if cached and cached[:2] == (seen.size, seen.mtime_ns):
            return cached[2]
        if seen.is_link:
            result: Manifest | BadManifestError = BadManifestError(f"{name}: is a symbolic link", file=name)
        elif seen.special:
            result = BadManifestError(f"{name}: is {seen.special}, not a regular file; it was not read", file=name)
        else:
            try:
                result = parse_manifest(self.root / name, max_templates=self.max_templates)
            except BadManifestError as e:
                result = e
        self._manifests[name] = (seen.size, seen.mtime_ns, result)
        return result

    def _manifest_job(self, name: str, m: Manifest | BadManifestError, claimers: dict[str, list[str]],
                      now: float) -> JobSpec | None:
        job = job_stem(name)
        mkey = (False, name)
        if self._seen[mkey].is_link:
            return self._failed_if_settled(job, [name], self._link_error(name), now)
        if isinstance(m, BadManifestError):
            return self._refused_manifest_job(name, m, claimers, now)

        refs = manifest_refs(m)
        located: list = []
        field_of: dict[tuple[bool, str], str] = {}
        missing: list[str] = []
        error: JobError | None = None
        for field, ref, is_template in refs:
            try:
                loc = self.rules.locate(ref, manifest=name, field=field, template=is_template)
            except JobError as e:
                error = error or e
                continue
            if loc is None:
                missing.append(ref)
                continue
            located.append(loc)
            field_of[(loc.library, loc.name)] = field
            others = [c for c in claimers.get(loc.name, []) if c != name]
            if others and not loc.library and error is None:
                # library templates are only read, so any number of jobs may share one
                error = ambiguous_job_error(f"{name}: {field} {ref!r} is also named by {', '.join(sorted(others))}; "
                                            "an inbox file can belong to one job only", file=name)

        keys = [mkey]
        for loc in located:
            key = (loc.library, loc.name)
            seen = self._observe(key, now)
            if seen is not None:
                keys.append(key)
                if seen.special and error is None:
                    error = PermanentJobError(f"{name}: {field_of[key]} {loc.name!r} is {seen.special}, not a "
                                              "regular file; it was not read", code="bad_media", file=loc.name)
        if not all([self._stable(k, now) for k in keys]):
            self._note_waiting(job, keys, "settling", self._settled_at(keys))
            return None
        files = [self.root / name] + [loc.path for loc in located if not loc.library]
        ready_since = self._settled_at(keys)
        if error is not None:
            return JobSpec(name=job, audio=None, templates=[], manifest=self.root / name, files=_unique(files),
                           options=m.options, error=error, ready_since=ready_since)
        meant = {ref: self._suggested[normal_ref(ref)] for ref in missing if normal_ref(ref) in self._suggested}
        if meant:
            keys_meant = [(False, n) for n in meant.values()]
            for k in keys_meant:
                self._observe(k, now)
            if not all([self._stable(k, now) for k in keys_meant if k in self._seen]):
                return None
            hints = "; ".join(f"{ref!r} not found, did you mean {name!r}?" for ref, name in meant.items())
            err = MissingPartnerError(f"{name}: {hints} Fix the manifest and drop the files again", file=name)
            return JobSpec(name=job, audio=None, templates=[], manifest=self.root / name,
                           files=_unique(files + [self.root / n for n in meant.values()]), options=m.options,
                           error=err, ready_since=ready_since)
        if missing:
            due = ready_since + self.grace
            if now < due:
                self._wake_at(due)
                self._note_waiting(job, keys, "partner", due)
                return None
            err = MissingPartnerError(f"{name}: {', '.join(repr(r) for r in missing)} not found in the inbox"
                                      f"{' or the template library' if self.rules.library else ''} "
                                      f"after waiting {format_duration(self.grace)}", file=name)
            return JobSpec(name=job, audio=None, templates=[], manifest=self.root / name, files=_unique(files),
                           options=m.options, error=err, ready_since=due)
        by_field = dict(zip([field_of[(loc.library, loc.name)] for loc in located], located))
        audio = by_field.get("audio")
        templates = [loc for f, loc in by_field.items() if f.startswith("templates[")]
        return JobSpec(
            name=job, audio=audio.path if audio else None, templates=[t.path for t in templates],
            manifest=self.root / name, files=_unique(files), library_templates=[t.path for t in templates if t.library],
            options=m.options, ready_since=ready_since)

    def _refused_manifest_job(self, name: str, err: BadManifestError, claimers: dict[str, list[str]],
                              now: float) -> JobSpec | None:
        """A manifest that failed its checks still takes every file it names to failed/NAME/:
        nothing a manifest names is rendered without it. It is judged like any manifest --
        once the files it names are there (or its partner grace is over) -- so files still
        on their way are not left behind to be paired by their stem."""
        job = job_stem(name)
        keys = [(False, name)]
        missing = False
        if err.refs is None:  # unreadable: its drop is the files of its stem
            keys += sorted(k for k in self._touched if not k[0] and k[1] != name and job_stem(k[1]) == job
                           and file_kind(k[1]) not in (None, "manifest"))
        for field, ref, is_template in err.refs or []:
            if claimers.get(normal_ref(ref)):
                continue  # a valid manifest names it too: it goes with that job
            try:
                loc = self.rules.locate(ref, manifest=name, field=field, template=is_template)
            except JobError:
                continue  # a path it may not use: nothing there is taken
            if loc is None:
                missing = True
            elif not loc.library and self._observe((False, loc.name), now) is not None:
                keys.append((False, loc.name))
        keys = list(dict.fromkeys(keys))
        if not all([self._stable(k, now) for k in keys]):
            self._note_waiting(job, keys, "settling", self._settled_at(keys))
            return None
        ready_since = self._settled_at(keys)
        if missing and now < ready_since + self.grace:
            self._wake_at(ready_since + self.grace)
            self._note_waiting(job, keys, "partner", ready_since + self.grace)
            return None
        return JobSpec(name=job, audio=None, templates=[], manifest=self.root / name,
                       files=[self.root / k[1] for k in keys], options=JobOptions(), error=err,
                       ready_since=ready_since)

    # ------------------------------------------------------------------ same-stem pairs

    def _stem_jobs(self, media: dict[str, str], manifest_jobs: set[str], now: float) -> list[JobSpec]:
        groups: dict[str, list[str]] = defaultdict(list)
        for n in media:
            groups[job_stem(n)].append(n)
        specs = []
        for stem, names in sorted(groups.items()):
            if stem in manifest_jobs:
                continue  # the manifest NAME goes first; these are paired once it is claimed
            names.sort()
            keys = [(False, n) for n in names]
            if not all([self._stable(k, now) for k in keys]):
                self._note_waiting(stem, keys, "settling", self._settled_at(keys))
                continue
            spec = self._stem_job(stem, names, media, now)
            if spec is not None:
                specs.append(spec)
        return specs

    def _stem_job(self, stem: str, names: list[str], media: dict[str, str], now: float) -> JobSpec | None:
        files = [self.root / n for n in names]
        settled = self._settled_at([(False, n) for n in names])
        audios = [n for n in names if media[n] == "audio"]
        templates = [n for n in names if media[n] == "template"]
        subtitles = [n for n in names if media[n] == "subtitles"]
        if not templates and all(is_text(n) or n in subtitles for n in names):
            return None  # notes.txt, a lone .srt: text only joins a job that has a template
        if len(audios) > 1 and any(not is_text(n) for n in audios):
            # a transcript beside the audio: the audio is spoken, the text travels with the job
            audios = [n for n in audios if not is_text(n)]
        # a job that fails on one file still names its inputs in the sidecar
        named = {"audio": self.root / audios[0] if len(audios) == 1 else None,
                 "templates": [self.root / templates[0]] if len(templates) == 1 else []}
        links = [n for n in names if self._seen[(False, n)].is_link]
        if links:
            return JobSpec(name=stem, **named, files=files, error=self._link_error(links[0]), ready_since=settled)
        specials = [n for n in names if self._seen[(False, n)].special]
        if specials:
            return JobSpec(name=stem, **named, files=files, error=self._special_error(specials[0]),
                           ready_since=settled)
        if len(audios) > 1 or len(templates) > 1 or len(subtitles) > 1:
            what = audios if len(audios) > 1 else templates if len(templates) > 1 else subtitles
            kind = "audio files" if len(audios) > 1 else "templates" if len(templates) > 1 else "subtitle files"
            err = ambiguous_job_error(f"{stem}: {len(what)} {kind} share the name {stem!r} ({', '.join(what)}); "
                                      "keep one, rename the others, or use a NAME.job.toml manifest", file=what[0])
            return JobSpec(name=stem, audio=None, templates=[], files=files, error=err, ready_since=settled)
        if audios and templates:
            return JobSpec(name=stem, audio=self.root / audios[0], templates=[self.root / templates[0]],
                           files=files, ready_since=settled)
        due = settled + self.grace
        if now < due:
            self._wake_at(due)
            self._note_waiting(stem, [(False, n) for n in names], "partner", due)
            return None
        lone = names[0]
        wanted = f"no template ({template_names_hint(stem)})" if audios else f"no audio ({audio_names_hint(stem)})"
        if not audios and not templates:
            wanted = f"no audio and no template to go with it ({audio_names_hint(stem)}; {template_names_hint(stem)})"
        err = MissingPartnerError(f"{lone} has {wanted} after waiting {format_duration(self.grace)}", file=lone)
        return JobSpec(name=stem, audio=None, templates=[], files=files, error=err, ready_since=due)

    # ------------------------------------------------------------------ helpers

    def _failed_if_settled(self, job: str, names: list[str], error: JobError, now: float) -> JobSpec | None:
        keys = [(False, n) for n in names]
        if not all([self._stable(k, now) for k in keys]):
            return None
        return JobSpec(name=job, audio=None, templates=[], manifest=self.root / names[0],
                       files=[self.root / n for n in names], options=JobOptions(), error=error,
                       ready_since=self._settled_at(keys))

    def _link_error(self, name: str) -> JobError:
        # where it leads stays out of the message: a link to /etc/shadow is nobody's business
        target = os.path.realpath(self.root / name)
        where = "out of the inbox" if not Path(target).is_relative_to(os.path.realpath(self.root)) else \
            "elsewhere in the inbox"
        return PermanentJobError(f"{name} is a symbolic link (leading {where}); links are never followed: "
                                 "drop the file itself", code=SYMLINK_INPUT, file=name)

    def _special_error(self, name: str) -> JobError:
        kind = self._seen[(False, name)].special
        return PermanentJobError(f"{name} is {kind}, not a regular file; it was not read: drop the file itself",
                                 code="bad_media", file=name)


@dataclass(frozen=True)
class Waiting:
    """A drop that is not a job yet, as the last scan saw it (for ``lipsyncd status``)."""

    name: str  # the job it will be
    files: tuple[str, ...]  # inbox names
    reason: str  # "settling": still being copied; "partner": waiting for its partner (or a manifest's files)
    until: float  # scan-clock time: settled by then, or failed then for want of a partner


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _unique(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))
