"""Job manifests: parsing, every problem reported at once, and path confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.errors import BadManifestError, PathOutsideInboxError
from daemon.intake.inbox import Inbox
from daemon.jobs import JobOptions
from daemon.intake.manifest import parse_manifest


def make_cfg(root: Path, **paths) -> config_mod.Config:
    (root / "inbox").mkdir(exist_ok=True)
    raw = {"paths": {"inbox": "inbox", "outbox": "outbox", "done": "done", "failed": "failed", "state": "state",
                     **paths},
           "watch": {"settle_seconds": 1, "partner_grace": "10m"},
           "cluster": {"host_id": "host-a"}}
    return config_mod.from_dict(raw, base=root)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def scan_settled(cfg: config_mod.Config) -> list:
    inbox = Inbox(cfg)
    inbox.scan(now=0)
    return inbox.scan(now=5)


def test_toml_manifest_with_every_option(tmp_path):
    path = write(tmp_path / "welcome.job.toml", """
        audio = "speech.mp3"
        templates = ["anna.mp4", "people/ben.jpg"]
        output_name = "welcome"
        link_lifetime = "3d"
        engine = "passthrough"
        callback_url = "https://hooks.example.com/x?token=abc"
    """.replace("\n        ", "\n"))
    m = parse_manifest(path)
    assert m.name == "welcome" and m.audio == "speech.mp3"
    assert m.templates == ["anna.mp4", "people/ben.jpg"]
    assert m.options == JobOptions(output_name="welcome", link_lifetime=3 * 86400, engine="passthrough",
                                   callback_url="https://hooks.example.com/x?token=abc")


def test_json_manifest_and_defaults(tmp_path):
    path = write(tmp_path / "intro.job.json", '{"audio": "a.wav", "templates": ["t.png"], "link_lifetime": 3600}')
    m = parse_manifest(path)
    assert m.name == "intro"
    assert m.options == JobOptions(link_lifetime=3600.0)


def test_one_audio_many_templates_gives_one_output_per_template(tmp_path):
    cfg = make_cfg(tmp_path)
    root = cfg.paths.inbox
    write(root / "welcome.job.toml", 'audio = "speech.mp3"\ntemplates = ["anna.mp4", "ben.jpg", "cleo.webm"]\n'
                                     'output_name = "welcome"\n')
    for n in ("speech.mp3", "anna.mp4", "ben.jpg", "cleo.webm"):
        write(root / n, b"x")
    [spec] = scan_settled(cfg)
    assert spec.error is None
    assert [t.name for t in spec.templates] == ["anna.mp4", "ben.jpg", "cleo.webm"]
    assert spec.output_names() == ["welcome-anna.mp4", "welcome-ben.mp4", "welcome-cleo.mp4"]


def test_every_problem_is_listed_at_once(tmp_path):
    path = write(tmp_path / "bad.job.toml", """
audio = 42
templates = ["anna.mp4", "notes.txt", 7, "anna.mp4"]
output_name = "../x"
link_lifetime = "forever"
engine = "magic"
callback_url = "ftp://hooks.example.com/?key=TOPSECRET"
speed = 2
tempaltes = []
""")
    with pytest.raises(BadManifestError) as info:
        parse_manifest(path)
    err = info.value
    problems = err.problems
    joined = "\n".join(problems)
    for fragment in ["audio: expected a file name string", "templates[1]: 'notes.txt' is not a template",
                     "templates[2]: expected a file name string", "templates[3]: 'anna.mp4' is listed twice",
                     "output_name:", "link_lifetime:", "engine: 'magic'", "callback_url:",
                     "speed: unknown key", "tempaltes: unknown key (did you mean 'templates'?)"]:
        assert fragment in joined
    assert len(problems) == 10
    assert err.message.startswith("bad.job.toml: 10 problems: ") and err.file == "bad.job.toml"
    assert "TOPSECRET" not in err.message  # a webhook token must not reach sidecars or logs


def test_json_manifest_problems_are_listed_too(tmp_path):
    path = write(tmp_path / "bad.job.json", '{"templates": [], "engine": "warp", "extra": true}')
    with pytest.raises(BadManifestError) as info:
        parse_manifest(path)
    assert [p.split(":")[0] for p in info.value.problems] == ["extra", "audio", "templates"]


@pytest.mark.parametrize("name,text,expected", [
    ("w.job.toml", 'audio = "a.wav"\ntemplates = ["t.mp4"\n', "not valid TOML"),
    ("w.job.toml", 'audio = "a.wav"\naudio = "b.wav"\n', "not valid TOML"),
    ("w.job.json", '{"audio": "a.wav", "templates": ["t.mp4"],}', "not valid JSON"),
    ("w.job.json", '["a.wav", "t.mp4"]', "must be a JSON object"),
    ("w.job.toml", b"audio = \"\xff.wav\"", "not UTF-8"),
])
def test_malformed_manifest_names_file_and_problem(tmp_path, name, text, expected):
    with pytest.raises(BadManifestError) as info:
        parse_manifest(write(tmp_path / name, text))
    assert info.value.message.startswith(f"{name}: 1 problem: ") and expected in info.value.message


def test_output_name_may_carry_mp4_extension(tmp_path):
    m = parse_manifest(write(tmp_path / "w.job.toml", 'audio = "a.wav"\ntemplates = ["t.mp4"]\n'
                                                       'output_name = "Hello World.MP4"\n'))
    assert m.options.output_name == "Hello World"


@pytest.mark.parametrize("lifetime", ["30s", 0, "8d"])
def test_link_lifetime_bounds(tmp_path, lifetime):
    text = f'audio = "a.wav"\ntemplates = ["t.mp4"]\nlink_lifetime = {lifetime!r}\n'.replace("'", '"')
    with pytest.raises(BadManifestError, match="between 60 seconds and 7 days"):
        parse_manifest(write(tmp_path / "w.job.toml", text))


# --------------------------------------------------------------------------- confinement


def confined_job(cfg: config_mod.Config, audio: str) -> object:
    root = cfg.paths.inbox
    write(root / "w.job.toml", f'audio = "{audio}"\ntemplates = ["anna.mp4"]\n')
    write(root / "anna.mp4", b"x")
    specs = [s for s in scan_settled(cfg) if s.name == "w"]
    assert len(specs) == 1
    return specs[0]


@pytest.mark.parametrize("ref,why", [
    ("../outside.wav", "'..'"),
    ("sub/../../outside.wav", "'..'"),
    ("/etc/outside.wav", "absolute path"),
    ("C:\\\\outside.wav", "absolute path"),
    (".cache/speech.wav", "hidden (dot) folder"),
    (".lipsyncd/work/host-b/other-20240101T000000Z-abcdef/inputs/speech.wav", "hidden (dot) folder"),
])
def test_paths_leaving_the_inbox_fail_the_job(tmp_path, ref, why):
    cfg = make_cfg(tmp_path)
    write(tmp_path / "outside.wav", b"secret")
    write(cfg.paths.inbox / ".cache/speech.wav", b"x")
    write(cfg.work_dir / "host-b/other-20240101T000000Z-abcdef/inputs/speech.wav", b"x")
    spec = confined_job(cfg, ref)
    assert isinstance(spec.error, PathOutsideInboxError)
    assert spec.error.message.startswith("w.job.toml: audio ") and why in spec.error.message
    # the manifest and its legitimate files go to failed/, nothing outside is touched
    assert {p.name for p in spec.files} == {"w.job.toml", "anna.mp4"}


def test_symlinked_folder_leading_out_of_inbox_fails(tmp_path):
    cfg = make_cfg(tmp_path)
    write(tmp_path / "elsewhere/speech.wav", b"secret")
    (cfg.paths.inbox / "shared").symlink_to(tmp_path / "elsewhere")
    spec = confined_job(cfg, "shared/speech.wav")
    assert isinstance(spec.error, PathOutsideInboxError) and "symbolic link" in spec.error.message


def test_work_area_inside_inbox_is_off_limits_even_without_a_dot(tmp_path):
    cfg = make_cfg(tmp_path, work="inbox/work")
    write(cfg.work_dir / "host-b/job-1/inputs/speech.wav", b"x")
    spec = confined_job(cfg, "work/host-b/job-1/inputs/speech.wav")
    assert isinstance(spec.error, PathOutsideInboxError)
    assert "the work area of claimed jobs" in spec.error.message


def test_library_template_may_not_leave_the_library(tmp_path):
    cfg = make_cfg(tmp_path, templates="library")
    write(tmp_path / "private/face.mp4", b"x")
    (tmp_path / "library").mkdir()
    (tmp_path / "library/face.mp4").symlink_to(tmp_path / "private/face.mp4")
    root = cfg.paths.inbox
    write(root / "w.job.toml", 'audio = "a.wav"\ntemplates = ["face.mp4"]\n')
    write(root / "a.wav", b"x")
    [spec] = scan_settled(cfg)
    assert isinstance(spec.error, PathOutsideInboxError) and "template library" in spec.error.message


def test_subfolder_files_inside_the_inbox_are_fine(tmp_path):
    cfg = make_cfg(tmp_path)
    root = cfg.paths.inbox
    write(root / "w.job.toml", 'audio = "batch 1/speech.wav"\ntemplates = ["batch 1\\\\anna.mp4"]\n')
    audio = write(root / "batch 1/speech.wav", b"x")
    anna = write(root / "batch 1/anna.mp4", b"x")
    [spec] = scan_settled(cfg)
    assert spec.error is None and spec.audio == audio and spec.templates == [anna]
