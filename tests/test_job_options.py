"""One definition of a job's options, five doors: a manifest, the API (form and JSON), the
web console's New job form, ``lipsyncd submit``'s flags and the OpenAPI document.

The doors are asked what they take (a running API's OpenAPI document and /new page, the
real argument parser) and the same inputs are sent through each: a manifest and an API
submission must keep the same values or refuse with the same messages.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from daemon.actions import submit as submit_action
from daemon.errors import BadManifestError
from daemon.intake.manifest import parse_manifest, parse_manifest_bytes
from daemon.joboptions import FILE, OPTIONS, SOURCE_FIELDS, TABLE
from tests.api_harness import ThreadApi, auth, new_key, share_config
from tests.daemon_harness import Share

REPO = Path(__file__).resolve().parents[1]

# (what a manifest writes, the same as the API's text fields); None: the fields are str(value)
CASES: list[tuple[dict, dict | None]] = [
    ({"engine": "warp"}, None),
    ({"engine": "magic"}, None),
    ({"link_lifetime": "3d"}, None),
    ({"link_lifetime": 30}, None),
    ({"link_lifetime": "forever"}, None),
    ({"callback_url": "http://127.0.0.1:9/hook?token=SECRET"}, None),
    ({"callback_url": "ftp://hooks.example.com/?token=SECRET"}, None),
    ({"output_name": "Hello World.MP4"}, None),
    ({"output_name": "../x"}, None),
    ({"output_name": "team/q3"}, None),  # the API used to clean this silently; now both doors refuse it
    ({"priority": 10}, None),
    ({"priority": 101}, None),
    ({"priority": 2.5}, None),
    ({"priority": "high"}, None),
    ({"resolution": "720p"}, None),
    ({"resolution": "huge"}, None),
    ({"resolution": "1280x720", "aspect": "9:16"}, None),
    ({"aspect": "1:1"}, None),
    ({"aspect": "2:1"}, None),
    ({"fps": 30}, None),
    ({"fps": 500}, None),
    ({"fps": "fast"}, None),
    ({"watermark": "logo.png"}, None),
    ({"watermark": {"image": "logo.png", "position": "top-left", "scale": 0.2}},
     {"watermark": "logo.png", "watermark_position": "top-left", "watermark_scale": "0.2"}),
    ({"watermark": {"image": "logo.gif"}}, {"watermark": "logo.gif"}),
    ({"watermark": {"image": "logo.png", "scale": 5, "opacity": 2, "position": "middle"}},
     {"watermark": "logo.png", "watermark_scale": "5", "watermark_opacity": "2", "watermark_position": "middle"}),
    ({"intro": "intro.mp4", "outro": "outro.webm"}, None),
    ({"intro": "intro.gif"}, None),
    ({"subtitles": "burn"}, None),
    ({"subtitles": "loud"}, None),
    ({"voice": "en-us"}, None),
    ({"voice": "two words"}, None),
    ({"text": "Hello from one definition."}, None),
    ({"text": "   "}, None),
]
OPTION_KEYS = {o.key for o in OPTIONS}


def _fields(values: dict, flat: dict | None) -> dict[str, str]:
    return flat if flat is not None else {k: str(v) for k, v in values.items()}


def _judged_by_manifest(values: dict) -> tuple[dict, list[tuple[str, str]]]:
    """(options kept, (key, message) of each option's problem) of a manifest with ``values``."""
    sources = {"templates": ["anna.mp4"]} | ({} if "text" in values else {"audio": "talk.wav"})
    data = json.dumps(sources | values).encode()
    try:
        manifest = parse_manifest_bytes(Path("job.job.json"), data)
    except BadManifestError as e:
        return {}, [(p.split(":")[0].split(".")[0].split(" ")[0], p) for p in e.problems
                    if p.split(":")[0].split(".")[0].split(" ")[0] in OPTION_KEYS]
    return _set(manifest.options.as_dict()), []


def _set(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    share = Share(root / "share")
    with ThreadApi(share_config(root, share, None, api={"fetch_private_urls": True})) as api:
        api.share = share
        api.key = new_key(api.cfg, "doors")
        yield api


def _submit(server, media, fields: dict[str, str]) -> httpx.Response:
    with open(media.audio, "rb") as a, open(media.template, "rb") as t:
        files = [("template", ("anna.mp4", t))] + ([] if "text" in fields else [("audio", ("talk.wav", a))])
        return httpx.post(f"{server.url}/api/v1/jobs", headers=auth(server.key), data=fields, files=files,
                          timeout=60)


@pytest.mark.parametrize("values,flat", CASES, ids=[json.dumps(c[0])[:60] for c in CASES])
def test_a_manifest_and_the_api_judge_one_input_the_same_way(server, media, values, flat):
    kept, problems = _judged_by_manifest(values)
    r = _submit(server, media, _fields(values, flat))
    if problems:
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        found = [(p["field"], p["message"]) for p in error.get("problems", [error]) if p["field"] in OPTION_KEYS]
        assert found == problems
        assert "SECRET" not in r.text  # a callback's token is never echoed, by either door
        return
    assert r.status_code == 202, r.text
    # the manifest the API dropped holds what the manifest door keeps
    written = server.share.inbox / f"{r.json()['name']}.job.json"
    assert _set(parse_manifest(written).options.as_dict()) == kept
    written.unlink()


def test_the_flags_of_lipsyncd_submit_carry_what_the_api_takes():
    parser = argparse.ArgumentParser()
    submit_action.add_parser(parser.add_subparsers())
    for values, flat in CASES:
        fields = _fields(values, flat)
        argv = ["submit", "talk.wav", "anna.mp4"] + [a for k, v in fields.items() for a in
                                                      ("--" + k.replace("_", "-"), v)]
        args = parser.parse_args(argv)
        assert submit_action.flag_fields(args) == fields, argv


def test_lipsyncd_submit_is_refused_with_the_manifest_doors_words(server, media, tmp_path):
    _kept, problems = _judged_by_manifest({"fps": 500, "aspect": "2:1"})
    done = subprocess.run([sys.executable, "-m", "daemon", "submit", str(media.audio), str(media.template),
                           "--server", server.url, "--api-key", server.key, "--fps", "500", "--aspect", "2:1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert problems[0][1] in done.stderr  # the first problem is the error; the others ride along in the body


class _Inputs(HTMLParser):
    """The inputs of the New job form (not the page's other forms: sign out, language)."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, dict] = {}
        self._select: str | None = None
        self._in_form = False

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._in_form = a.get("id") == "new-job"
        elif not self._in_form:
            return
        if tag in ("input", "select", "textarea") and a.get("name"):
            self.found.setdefault(a["name"], {"tag": tag, **a, "options": []})
            self._select = a["name"] if tag == "select" else None
        elif tag == "option" and self._select:
            self.found[self._select]["options"].append(a.get("value"))


def test_the_console_form_and_the_openapi_document_offer_every_option(server):
    # the API's own description of its submission
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    body = doc["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    as_json = body["application/json"]["schema"]["properties"]
    as_form = body["multipart/form-data"]["schema"]["properties"]
    # the console's New job form, as a signed-in user gets it
    page = httpx.get(f"{server.url}/new", headers=auth(server.key))
    assert page.status_code == 200
    parser = _Inputs()
    parser.feed(page.text)
    form = parser.found
    cli = argparse.ArgumentParser()
    submit_action.add_parser(cli.add_subparsers())
    flags = {a.dest for a in cli._subparsers._group_actions[0].choices["submit"]._actions}

    for option in OPTIONS:
        if option.kind == FILE:
            assert as_form[option.key]["format"] == "binary" and option.key in form and option.key in flags
            assert as_json[option.url_field]["format"] == "uri"
            continue
        fields = option.text_fields()
        for name in fields:
            assert name in as_json and name in as_form and name in flags, name
            assert name in form, f"the console has no input for {name}"
        if option.kind == TABLE:
            for part in option.parts:
                name = part.field_name(option.key)
                if part.choices:
                    assert as_json[name]["enum"] == list(part.choices)
                    assert form[name]["options"] == ["", *part.choices]
                if part.maximum is not None:
                    assert as_json[name]["maximum"] == part.maximum == float(form[name]["max"])
            continue
        if option.choices:
            assert as_json[option.key]["enum"] == list(option.choices)
            assert form[option.key]["options"] == ["", *option.choices]  # "" = the server's default
        if option.kind in ("integer", "number"):
            assert as_json[option.key]["minimum"] == option.minimum == float(form[option.key]["min"])
            assert as_json[option.key]["maximum"] == option.maximum == float(form[option.key]["max"])
    # nothing else: every field of the document is an option's or a source's
    sources = {s.key for s in SOURCE_FIELDS}
    known = sources | {f for o in OPTIONS for f in (*o.text_fields(), o.key)}
    assert set(as_form) <= known and set(as_json) <= known
    assert set(as_json) | {s.key for s in SOURCE_FIELDS if s.kind == FILE} | {"subtitle_file"} == known
    assert set(form) - sources == {f for o in OPTIONS for f in (o.text_fields() if o.kind != FILE else (o.key,))}


def test_the_readme_names_every_option():
    readme = (REPO / "README.md").read_text()
    for option in OPTIONS:
        for name in (option.key, *option.text_fields()):
            assert f"`{name}`" in readme or f"\n{name} = " in readme, name
