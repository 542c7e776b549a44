"""config.toml loading: every problem at once, environment overrides, no secrets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon import config
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lipsyncd.toml"
    path.write_text(text)
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(path, env=env or {})
    return info.value.problems


def test_every_problem_is_listed_at_once_with_file_key_and_reason(tmp_path):
    path = write(tmp_path, """
[render]
crf = 99
engine = "magic"
[watch]
settle_seconds = "soon"
[storage]
endpoint = "ftp://files.example.com"
bucket = "Not_A_Bucket"
""")
    problems = problems_of(path)
    assert len(problems) == 5, problems
    assert all(p.startswith(f"{path}: ") for p in problems)
    by_key = {p.split(": ")[1]: p for p in problems}
    assert set(by_key) == {"render.crf", "render.engine", "watch.settle_seconds", "storage.endpoint", "storage.bucket"}
    assert "above the maximum 51" in by_key["render.crf"]
    assert "'magic' is not one of" in by_key["render.engine"]
    assert "not a duration" in by_key["watch.settle_seconds"]
    assert "http:// or https://" in by_key["storage.endpoint"]
    assert "not a valid S3 bucket name" in by_key["storage.bucket"]
    # the exception text lists them too (that is what the CLI prints)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert "5 problem(s)" in str(info.value)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path):
    path = write(tmp_path, """
[render]
engin = "warp"
[wach]
mode = "polling"
""")
    problems = problems_of(path)
    assert any("render.engin: unknown option (did you mean 'engine'?)" in p for p in problems), problems
    assert any("wach: unknown option" in p for p in problems), problems


def test_credentials_in_the_config_are_refused_without_echoing_them(tmp_path):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    path = write(tmp_path, f"""
[storage]
mode = "s3"
endpoint = "https://AKIAEXAMPLE:{secret}@s3.example.com"
secret_key = "{secret}"
aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"
""")
    problems = problems_of(path)
    text = "\n".join(problems)
    assert "storage.secret_key: credentials do not belong in the config file" in text
    assert "storage.aws_access_key_id: credentials do not belong in the config file" in text
    assert "storage.endpoint: credentials do not belong in the URL" in text
    # naming the offending key is enough; the secret must not be copied into logs/terminals
    assert secret not in text


def test_environment_overrides_the_file_and_converts_types(tmp_path):
    path = write(tmp_path, """
[storage]
endpoint = "http://file.example.com"
[render]
crf = 20
""")
    cfg = config.load(path, env={
        "LIPSYNCD_STORAGE__ENDPOINT": "https://env.example.com",
        "LIPSYNCD_RENDER__WAV2LIP__BATCH_SIZE": "8",
        "LIPSYNCD_WATCH__SETTLE_SECONDS": "1m30s",
        "LIPSYNCD_STORAGE__CREATE_BUCKET": "false",
        "UNRELATED": "x",
    })
    assert cfg.storage.endpoint == "https://env.example.com"
    assert cfg.render.crf == 20
    assert cfg.render.wav2lip.batch_size == 8
    assert cfg.watch.settle_seconds == 90
    assert cfg.storage.create_bucket is False


def test_bad_environment_values_name_the_variable_not_the_file(tmp_path):
    path = write(tmp_path, "[render]\ncrf = 20\n")
    problems = problems_of(path, env={"LIPSYNCD_RENDER__CRF": "99", "LIPSYNCD_RENDER__COLOUR": "red",
                                      "LIPSYNCD_STORAGE__ENDPOINT": "ftp://x"})
    assert sorted(problems) == [
        "environment LIPSYNCD_RENDER__COLOUR (render.colour): unknown option",
        "environment LIPSYNCD_RENDER__CRF (render.crf): 99 is above the maximum 51",
        "environment LIPSYNCD_STORAGE__ENDPOINT (storage.endpoint): 'ftp://x' must start with http:// or https://",
    ]


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    path = sub / "c.toml"
    path.write_text('[paths]\ninbox = "../share/in"\nstate = "/var/lib/x"\n')
    cfg = config.load(path, env={})
    assert cfg.paths.inbox == sub / "../share/in"
    assert cfg.paths.state == Path("/var/lib/x")
    assert cfg.work_dir == cfg.paths.inbox / ".lipsyncd" / "work"


def test_missing_and_malformed_files_are_reported(tmp_path):
    assert problems_of(tmp_path / "nope.toml") == [
        f"{tmp_path / 'nope.toml'}: file not found; name the file with -c FILE or $LIPSYNCD_CONFIG"]


def test_a_relative_config_that_is_missing_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (problem,) = problems_of(Path("config.toml"))
    assert problem.startswith(f"config.toml (looked in {tmp_path}): file not found")


def test_limits_of_durations_and_sizes_are_said_as_the_file_says_them(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.from_dict({"links": {"lifetime": "30d"}, "cluster": {"lease_timeout": "1s"}}, base=tmp_path)
    text = str(err.value)
    assert "'30d' is above the maximum 7d" in text and "below the minimum 2s" in text
    assert "604800" not in text
    bad = write(tmp_path, "[render\nengine = 1\n")
    (problem,) = problems_of(bad)
    assert problem.startswith(f"{bad}: not valid TOML")


def _option_names(cls: type, prefix: str = "") -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        if dataclasses.is_dataclass(f.type) or (isinstance(f.default_factory, type)
                                                and dataclasses.is_dataclass(f.default_factory)):
            names += _option_names(f.default_factory, f"{prefix}{f.name}.")
        else:
            names.append(f"{prefix}{f.name}")
    return names


def test_committed_config_is_valid_documents_every_option_and_matches_the_defaults():
    path = REPO / "config.toml"
    cfg = config.load(path, env={})
    text = path.read_text()
    defaults = config.Config()
    undocumented = []
    for dotted in _option_names(config.Config):
        section, _, key = dotted.rpartition(".")
        if f"[{section}]" not in text or not any(line.lstrip("# ").startswith(f"{key} ") for line in text.splitlines()):
            undocumented.append(dotted)
        got, want = cfg, defaults
        for part in dotted.split("."):
            got, want = getattr(got, part), getattr(want, part)
        if isinstance(want, Path):
            want = REPO / want  # relative defaults resolve next to the file
        assert got == want, f"config.toml sets {dotted} = {got!r}, the default is {want!r}"
    assert undocumented == [], f"options missing from config.toml: {undocumented}"
