"""The inbox scanner on real files: pairing, settle window, partner grace, ignored names.

File contents do not matter to the scanner (media is checked at render time), so drops
are small byte files; time is stepped by passing ``now`` to ``scan``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.errors import MissingPartnerError
from daemon.intake.inbox import Inbox, format_duration
from daemon.names import AUDIO_EXTENSIONS_ORDERED, TEMPLATE_EXTENSIONS_ORDERED


def make_cfg(root: Path, **watch) -> config_mod.Config:
    (root / "inbox").mkdir(exist_ok=True)
    raw = {"paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": "state"},
           "watch": {"settle_seconds": 3, "partner_grace": "10m", **watch},
           "cluster": {"host_id": "host-a"}}
    return config_mod.from_dict(raw, base=root)


def drop(inbox: Path, name: str, data: bytes = b"x" * 16) -> Path:
    path = inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> config_mod.Config:
    return make_cfg(tmp_path)


def settled(inbox: Inbox, start: float = 1000.0) -> list:
    """Scan twice, the settle window apart: what a drop that stopped changing gives."""
    inbox.scan(now=start)
    return inbox.scan(now=start + inbox.settle)


def test_same_stem_pairs_every_audio_and_template_extension(cfg):
    root = cfg.paths.inbox
    expected = {}
    for a in AUDIO_EXTENSIONS_ORDERED:
        for t in TEMPLATE_EXTENSIONS_ORDERED:
            stem = f"job{a}{t}".replace(".", "_")
            # upper case extensions on half of them: people drop TALK.WAV from Windows
            upper = len(expected) % 2 == 1
            expected[stem] = (drop(root, stem + (a.upper() if upper else a)),
                              drop(root, stem + (t.upper() if upper else t)))
    specs = settled(Inbox(cfg))
    assert len(specs) == len(AUDIO_EXTENSIONS_ORDERED) * len(TEMPLATE_EXTENSIONS_ORDERED)
    for spec in specs:
        audio, template = expected[spec.name]
        assert spec.error is None
        assert spec.audio == audio and spec.templates == [template]
        assert sorted(spec.files) == sorted([audio, template])
        assert spec.manifest is None and spec.library_templates == []
        assert spec.output_names() == [f"{spec.name}.mp4"]


def test_growing_file_is_taken_only_after_settle_window(cfg):
    inbox = Inbox(cfg)
    drop(cfg.paths.inbox, "talk.mp4")
    video = drop(cfg.paths.inbox, "talk.wav", b"a" * 10)
    assert inbox.scan(now=0) == []
    with open(video, "ab") as fh:  # the copy is still running
        fh.write(b"a" * 10)
    assert inbox.scan(now=2) == []
    assert inbox.scan(now=4.9) == []  # changed at t=2: settles at t=5
    assert inbox.next_deadline() == pytest.approx(5)
    specs = inbox.scan(now=5)
    assert [s.name for s in specs] == ["talk"]


def test_mtime_change_without_size_change_is_resettled(cfg):
    inbox = Inbox(cfg)
    drop(cfg.paths.inbox, "talk.mp4")
    audio = drop(cfg.paths.inbox, "talk.wav")
    inbox.scan(now=0)
    st = audio.stat()
    os.utime(audio, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # rewritten in place, same size
    assert inbox.scan(now=2) == []
    assert inbox.scan(now=4) == []  # would have settled at 3 without the rewrite
    assert [s.name for s in inbox.scan(now=5)] == ["talk"]


def test_temporary_and_foreign_names_are_ignored(cfg):
    root = cfg.paths.inbox
    for name in [".talk.wav", "talk.wav.part", "talk.mp4.tmp", "clip.mp4.crdownload", "~$talk.mp4",
                 ".talk.mp4.swp", "talk.mp3.swp", "README.md", "README.mp4", "notes.txt", "talk.docx",
                 "sub/other.wav", "sub/other.mp4", ".lipsyncd/work/h/j/inputs/x.wav"]:
        drop(root, name)
    inbox = Inbox(cfg)
    assert settled(inbox) == []
    # long after any partner grace, still nothing: these never became jobs, not even failed ones
    assert inbox.scan(now=100_000) == []
    drop(root, "talk.wav")
    drop(root, "talk.mp4")
    specs = settled(inbox, start=100_001)
    assert [(s.name, s.error) for s in specs] == [("talk", None)]


def test_zero_byte_files_pass_once_settled(cfg):
    drop(cfg.paths.inbox, "empty.wav", b"")
    drop(cfg.paths.inbox, "empty.png", b"")
    inbox = Inbox(cfg)
    assert inbox.scan(now=0) == []
    specs = inbox.scan(now=3)
    assert [(s.name, s.error) for s in specs] == [("empty", None)]  # the render step names the problem


def test_lone_audio_fails_after_partner_grace_not_before(cfg):
    audio = drop(cfg.paths.inbox, "talk.wav")
    inbox = Inbox(cfg)
    assert inbox.scan(now=0) == []
    assert inbox.scan(now=3) == []  # settled, now waiting for its template
    assert inbox.scan(now=602.9) == []
    specs = inbox.scan(now=603)
    assert len(specs) == 1
    spec = specs[0]
    assert isinstance(spec.error, MissingPartnerError)
    assert spec.error.message == "talk.wav has no template (talk.mp4/.mov/.mkv/.webm/.png/.jpg) after waiting 10m"
    assert spec.files == [audio] and spec.name == "talk"


def test_lone_template_names_the_missing_audio(cfg):
    drop(cfg.paths.inbox, "anna.jpg")
    inbox = Inbox(cfg)
    inbox.scan(now=0)
    [spec] = inbox.scan(now=700)
    assert spec.error.message.startswith("anna.jpg has no audio (anna.wav/.mp3/.m4a/.flac/.ogg/.aac, or text: anna.txt)")


def test_partner_still_being_copied_is_waited_for_beyond_grace(cfg):
    drop(cfg.paths.inbox, "talk.wav")
    video = drop(cfg.paths.inbox, "talk.mp4", b"v")
    inbox = Inbox(cfg)
    for t in range(0, 1300, 2):  # a 20-minute copy over a slow share
        with open(video, "ab") as fh:
            fh.write(b"v")
        assert inbox.scan(now=t) == []
    assert [(s.name, s.error) for s in inbox.scan(now=1301)] == [("talk", None)]


def test_two_templates_with_one_stem_fail_as_ambiguous(cfg):
    files = [drop(cfg.paths.inbox, n) for n in ("talk.wav", "talk.mp4", "talk.png")]
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "ambiguous_job"
    assert "talk.mp4, talk.png" in spec.error.message
    assert sorted(spec.files) == sorted(files)  # all of them go to failed/talk/


def test_two_audios_with_one_stem_fail_as_ambiguous(cfg):
    for n in ("talk.wav", "talk.MP3", "talk.mp4"):
        drop(cfg.paths.inbox, n)
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "ambiguous_job" and "2 audio files" in spec.error.message


def test_symlink_out_of_inbox_fails_and_is_never_read(cfg, tmp_path):
    # a FIFO target: reading it would block the scan forever, so the test proves no read
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    link = cfg.paths.inbox / "x.wav"
    link.symlink_to(fifo)
    video = drop(cfg.paths.inbox, "x.mp4")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "symlink_input"  # as the README's error table says
    assert "x.wav" in spec.error.message and "out of the inbox" in spec.error.message
    assert sorted(spec.files) == sorted([link, video])
    assert (spec.audio, spec.templates) == (link, [video])  # the sidecar names the inputs


def test_lone_symlink_fails_without_waiting_for_a_partner(cfg):
    (cfg.paths.inbox / "passwd.wav").symlink_to("/etc/passwd")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "symlink_input" and "/etc" not in spec.error.message
    assert spec.audio == cfg.paths.inbox / "passwd.wav"


def test_fifo_named_like_media_fails_as_bad_media_without_being_opened(cfg):
    os.mkfifo(cfg.paths.inbox / "f.wav")  # opening it would block the daemon
    video = drop(cfg.paths.inbox, "f.mp4")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "bad_media" and "FIFO" in spec.error.message and "f.wav" in spec.error.message
    assert sorted(spec.files) == sorted([cfg.paths.inbox / "f.wav", video])


def test_fifo_named_like_a_manifest_is_never_read(cfg):
    os.mkfifo(cfg.paths.inbox / "m.job.toml")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "bad_manifest" and "FIFO" in spec.error.message


def test_long_names_are_shortened_stably_and_the_original_kept(cfg):
    stem = "é" * 120 + "-talk"  # 245 bytes: legal on Linux, too long for NAME.json temp files
    drop(cfg.paths.inbox, f"{stem}.wav")
    drop(cfg.paths.inbox, f"{stem}.mp4")
    [spec] = settled(Inbox(cfg))
    assert len(spec.name.encode()) <= 200 and spec.original_name == stem
    assert spec.name == settled(Inbox(cfg))[0].name  # the same every time (a restart finds it)
    other = "é" * 120 + "-walk"  # same beginning: must not collide after shortening
    drop(cfg.paths.inbox, f"{other}.wav")
    drop(cfg.paths.inbox, f"{other}.mp4")
    names = {s.name for s in settled(Inbox(cfg))}
    assert len(names) == 2
    assert all(len(f".{n}.mp4.rendered.json".encode()) <= 255 for n in names)


def test_symlink_inside_inbox_is_refused(cfg):
    drop(cfg.paths.inbox, "real/talk.wav")
    (cfg.paths.inbox / "talk.wav").symlink_to("real/talk.wav")
    drop(cfg.paths.inbox, "talk.mp4")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "symlink_input"


def test_manifest_files_are_not_paired_by_stem(cfg):
    root = cfg.paths.inbox
    drop(root, "welcome.job.toml", b'audio = "talk.wav"\ntemplates = ["talk.mp4", "ben.jpg"]\n')
    audio, t1, t2 = drop(root, "talk.wav"), drop(root, "talk.mp4"), drop(root, "ben.jpg")
    specs = settled(Inbox(cfg))
    assert [s.name for s in specs] == ["welcome"]
    spec = specs[0]
    assert spec.error is None
    assert spec.audio == audio and spec.templates == [t1, t2]
    assert spec.manifest == root / "welcome.job.toml"
    assert set(spec.files) == {audio, t1, t2, root / "welcome.job.toml"}
    assert spec.output_names() == ["welcome-talk.mp4", "welcome-ben.mp4"]


def test_manifest_waits_for_named_files_then_fails_after_grace(cfg):
    root = cfg.paths.inbox
    manifest = drop(root, "welcome.job.toml", b'audio = "speech.mp3"\ntemplates = ["anna.mp4"]\n')
    audio = drop(root, "speech.mp3")
    inbox = Inbox(cfg)
    assert inbox.scan(now=0) == [] and inbox.scan(now=3) == []
    assert inbox.scan(now=602) == []
    [spec] = inbox.scan(now=603)
    assert isinstance(spec.error, MissingPartnerError)
    assert "'anna.mp4' not found in the inbox after waiting 10m" in spec.error.message
    assert spec.error.file == "welcome.job.toml"
    assert sorted(spec.files) == sorted([manifest, audio])


def test_manifest_completed_in_time_runs(cfg):
    root = cfg.paths.inbox
    drop(root, "welcome.job.json", b'{"audio": "speech.mp3", "templates": ["anna.mp4"], "output_name": "hi"}')
    drop(root, "speech.mp3")
    inbox = Inbox(cfg)
    inbox.scan(now=0)
    inbox.scan(now=300)
    drop(root, "anna.mp4")
    assert inbox.scan(now=301) == []
    [spec] = inbox.scan(now=304)
    assert spec.error is None and spec.options.output_name == "hi"
    assert spec.output_names() == ["hi.mp4"]


def test_manifest_template_comes_from_library_when_not_in_inbox(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.paths.templates = tmp_path / "library"
    library = cfg.paths.templates
    anna = drop(library, "people/anna.mp4")
    drop(library, "ben.jpg")
    root = cfg.paths.inbox
    drop(root, "w.job.toml", b'audio = "s.wav"\ntemplates = ["people/anna.mp4", "ben.jpg"]\n')
    audio, ben_inbox = drop(root, "s.wav"), drop(root, "ben.jpg")  # the inbox copy wins
    [spec] = settled(Inbox(cfg))
    assert spec.error is None
    assert spec.templates == [anna, ben_inbox]
    assert spec.library_templates == [anna]
    assert anna not in spec.files and ben_inbox in spec.files and audio in spec.files


def test_bad_manifest_fails_once_settled(cfg):
    manifest = drop(cfg.paths.inbox, "w.job.toml", b'audio = "s.wav"\ntemplates = "a.mp4"\nspeed = 2\n')
    named = [drop(cfg.paths.inbox, "s.wav"), drop(cfg.paths.inbox, "a.mp4")]
    inbox = Inbox(cfg)
    assert inbox.scan(now=0) == []
    [spec] = inbox.scan(now=3)
    assert spec.error.code == "bad_manifest" and sorted(spec.files) == sorted([manifest, *named])
    assert "speed" in spec.error.message and "templates" in spec.error.message


def test_manifest_named_like_a_stem_pair_goes_first(cfg):
    root = cfg.paths.inbox
    manifest = drop(root, "talk.job.toml", b'audio = "speech.wav"\ntemplates = ["anna.mp4"]\n')
    job_files = [manifest, drop(root, "speech.wav"), drop(root, "anna.mp4")]
    drop(root, "talk.wav")
    drop(root, "talk.mp4")
    inbox = Inbox(cfg)
    [spec] = settled(inbox)
    assert spec.manifest == manifest
    for f in job_files:  # what a claim does
        f.unlink()
    assert [(s.name, s.manifest) for s in inbox.scan(now=1004)] == [("talk", None)]


def test_file_named_by_two_manifests_fails_both(cfg):
    root = cfg.paths.inbox
    drop(root, "a.job.toml", b'audio = "s.wav"\ntemplates = ["x.mp4"]\n')
    drop(root, "b.job.toml", b'audio = "s.wav"\ntemplates = ["y.mp4"]\n')
    for n in ("s.wav", "x.mp4", "y.mp4"):
        drop(root, n)
    specs = settled(Inbox(cfg))
    assert sorted(s.name for s in specs) == ["a", "b"]
    assert all(s.error.code == "ambiguous_job" for s in specs)


def test_library_template_may_serve_several_manifests(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.paths.templates = tmp_path / "library"
    drop(cfg.paths.templates, "anna.mp4")
    for n in ("a", "b"):
        drop(cfg.paths.inbox, f"{n}.job.toml", f'audio = "{n}.wav"\ntemplates = ["anna.mp4"]\n'.encode())
        drop(cfg.paths.inbox, f"{n}.wav")
    specs = settled(Inbox(cfg))
    assert [(s.name, s.error) for s in specs] == [("a", None), ("b", None)]


def test_jobs_come_oldest_first(cfg):
    inbox = Inbox(cfg)
    drop(cfg.paths.inbox, "zed.wav")
    drop(cfg.paths.inbox, "zed.mp4")
    inbox.scan(now=0)
    drop(cfg.paths.inbox, "abe.wav")
    drop(cfg.paths.inbox, "abe.mp4")
    inbox.scan(now=1)
    assert [s.name for s in inbox.scan(now=10)] == ["zed", "abe"]


def test_format_duration():
    assert [format_duration(s) for s in (600, 90, 7200, 0, 86400 + 30)] == ["10m", "1m30s", "2h", "0s", "1d30s"]


def test_a_manifest_typo_fails_at_once_with_a_suggestion_and_takes_the_meant_file_along(cfg):
    root = cfg.paths.inbox
    drop(root, "promo.job.toml", b'audio = "talk.wav"\ntemplates = ["portrait.jpg"]\n')
    drop(root, "talk.wav")
    drop(root, "portrait.jpeg")  # what the manifest meant
    specs = settled(Inbox(cfg))  # no partner grace: the answer is there now
    (spec,) = specs
    assert spec.name == "promo" and spec.error.code == "missing_partner"
    assert "'portrait.jpg' not found, did you mean 'portrait.jpeg'?" in spec.error.message
    # the file meant goes to failed/promo/ with the manifest: never a lone job of its own
    assert sorted(p.name for p in spec.files) == ["portrait.jpeg", "promo.job.toml", "talk.wav"]


def test_no_suggestion_from_another_complete_pair_or_another_kind(cfg):
    root = cfg.paths.inbox
    drop(root, "promo.job.toml", b'audio = "talk.wav"\ntemplates = ["talk.mp4"]\n')
    drop(root, "talk.wav")
    drop(root, "walk.mp3")  # audio, while the missing file is a template
    for n in ("talk.png", "talk.m4a"):  # a complete pair of its own ("talk.mp4" is close to "talk.png")
        drop(root, n)
    specs = settled(Inbox(cfg))
    assert [s.name for s in specs if s.name == "promo"] == []  # waits for talk.mp4 (partner grace)


def test_jobs_run_by_priority_then_age_and_waiting_raises_priority(cfg):
    root = cfg.paths.inbox
    cfg.watch.priority_aging = 600.0
    inbox = Inbox(cfg)
    # "old" is dropped first with the default priority; "urgent" and "later" come later
    drop(root, "old.wav"), drop(root, "old.mp4")
    inbox.scan(now=1000.0)
    drop(root, "urgent.job.toml", b'audio = "u.wav"\ntemplates = ["u.mp4"]\npriority = 5\n')
    drop(root, "u.wav"), drop(root, "u.mp4")
    drop(root, "low.job.toml", b'audio = "l.wav"\ntemplates = ["l.mp4"]\npriority = -3\n')
    drop(root, "l.wav"), drop(root, "l.mp4")
    inbox.scan(now=1010.0)
    order = [s.name for s in inbox.scan(now=1010.0 + inbox.settle)]
    assert order == ["urgent", "old", "low"]
    # an hour later nothing has run: the three aged alike, so their order holds; but a new
    # urgent job does not overtake jobs that have waited more than 5 x priority_aging
    drop(root, "rush.job.toml", b'audio = "r.wav"\ntemplates = ["r.mp4"]\npriority = 5\n')
    drop(root, "r.wav"), drop(root, "r.mp4")
    inbox.scan(now=1000.0 + 3600)
    order = [s.name for s in inbox.scan(now=1000.0 + 3600 + inbox.settle)]
    assert order.index("old") < order.index("rush") and order[0] == "urgent"


def test_a_bad_priority_is_a_manifest_error(cfg):
    drop(cfg.paths.inbox, "p.job.toml", b'audio = "a.wav"\ntemplates = ["a.mp4"]\npriority = "high"\n')
    drop(cfg.paths.inbox, "a.wav"), drop(cfg.paths.inbox, "a.mp4")
    spec = next(s for s in settled(Inbox(cfg)) if s.name == "p")
    assert spec.error.code == "bad_manifest" and "priority" in spec.error.message


# --------------------------------------------------------------------------- refused manifests


@pytest.mark.parametrize("option", ['resolution = "99999x1"', 'aspect = "0:0"', "fps = 0", "fps = 1000",
                                    'watermark = "../../etc/passwd"'])
def test_a_refused_manifest_takes_every_file_it_names(cfg, option):
    root = cfg.paths.inbox
    manifest = drop(root, "bad-res.job.toml",
                    f'audio = "bad-res.wav"\ntemplates = ["bad-res.jpg"]\n{option}\n'.encode())
    audio, picture = drop(root, "bad-res.wav"), drop(root, "bad-res.jpg")
    [spec] = settled(Inbox(cfg))
    assert spec.error.code == "bad_manifest" and spec.name == "bad-res"
    assert sorted(spec.files) == sorted([manifest, audio, picture])  # nothing is left to be paired by stem


def test_a_refused_manifest_waits_for_the_files_it_names_like_any_manifest(cfg):
    root = cfg.paths.inbox
    manifest = drop(root, "late.job.toml", b'audio = "late.wav"\ntemplates = ["late.mp4"]\nfps = 0\n')
    inbox = Inbox(cfg)
    assert inbox.scan(now=0) == [] and inbox.scan(now=3) == []  # its files are still on their way
    assert [w.reason for w in inbox.waiting] == ["partner"]
    audio, video = drop(root, "late.wav"), drop(root, "late.mp4")
    assert inbox.scan(now=100) == []
    [spec] = inbox.scan(now=103)
    assert spec.error.code == "bad_manifest" and sorted(spec.files) == sorted([manifest, audio, video])


def test_an_unreadable_manifest_takes_the_files_of_its_stem(cfg):
    root = cfg.paths.inbox
    manifest = drop(root, "junk.job.toml", b'audio = "junk.wav\ntemplates = [')
    audio, video = drop(root, "junk.wav"), drop(root, "junk.mp4")
    other = drop(root, "other.wav")
    specs = settled(Inbox(cfg))
    [spec] = [s for s in specs if s.name == "junk"]
    assert spec.error.code == "bad_manifest" and sorted(spec.files) == sorted([manifest, audio, video])
    assert other not in spec.files


def test_a_refused_manifest_never_takes_a_file_a_valid_manifest_names(cfg):
    root = cfg.paths.inbox
    good = drop(root, "talk.job.toml", b'audio = "speech.wav"\ntemplates = ["face.png"]\n')
    bad = drop(root, "bad.job.toml", b'audio = "speech.wav"\ntemplates = ["face.png"]\nfps = 0\n')
    audio, face = drop(root, "speech.wav"), drop(root, "face.png")
    specs = {s.name: s for s in settled(Inbox(cfg))}
    assert specs["talk"].error is None and sorted(specs["talk"].files) == sorted([good, audio, face])
    assert specs["bad"].error.code == "bad_manifest" and specs["bad"].files == [bad]
