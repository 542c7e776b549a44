"""Languages: the catalogs complete and compiled, the console's language chosen as a
browser and a person expect, numbers in the reader's words, chat messages in Chinese,
and the Chinese manual repeating the English one's commands exactly.

The console in a real browser, in Chinese, is tests/test_console_zh.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from daemon.i18n import LANGUAGES, catalogs, negotiate, supported, translations
from daemon.i18n import formats
from daemon.reporting.advice import ERROR_ADVICE
from daemon.reporting.notify import message_text, render_payload
from tests.api_harness import ThreadApi, auth, new_key, share_config
from tests.daemon_harness import REPO, Share
from tests.readme_blocks import code_blocks, sections, translated_sections

CJK = re.compile(r"[\u4e00-\u9fff]")


# --------------------------------------------------------------------------- the catalogs


def test_every_message_is_translated_compiled_and_keeps_its_placeholders():
    found = catalogs.problems()
    assert found == [], "\n".join(found)
    total = [m for m in catalogs.extract() if m.id]
    print(f"catalog: {len(total)} messages, {sum(len(str(m.id).split()) for m in total)} English words")
    assert len(total) > 150  # pages, options, advice, script texts and chat messages are all in it


def test_the_advice_for_every_error_code_reads_in_chinese_with_its_code_spans():
    _ = translations("zh-CN").gettext
    for code, (meaning, todo) in ERROR_ADVICE.items():
        for english in (meaning, todo):
            chinese = _(english)
            assert chinese != english and CJK.search(chinese), (code, english)
            assert re.findall(r"`[^`]+`", chinese) == re.findall(r"`[^`]+`", english), code


def test_every_state_and_every_worded_choice_has_a_name_people_read():
    from daemon.api.console.words import CHOICE_NAMES, STATE_NAMES
    from daemon.jobstate import JOB_STATES, OutputState
    from lipsync.finish.spec import POSITIONS, SUBTITLE_MODES

    assert set(JOB_STATES) | set(OutputState) <= set(STATE_NAMES)
    assert {"auto", "keep", *POSITIONS, *SUBTITLE_MODES} <= set(CHOICE_NAMES)


@pytest.mark.parametrize("header, default, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "en", "zh-CN"),
    ("zh", "en", "zh-CN"),
    ("zh-Hans-CN;q=1", "en", "zh-CN"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "zh-CN", "en"),
    ("fr-FR,zh-CN;q=0.5", "en", "zh-CN"),  # the first language we speak, by weight
    ("zh-TW,zh-HK;q=0.9", "en", "en"),  # Traditional readers: English rather than Simplified
    ("fr-FR,de;q=0.8", "zh-CN", "zh-CN"),  # none we speak: the configured default
    ("", "en", "en"),
    (None, "zh-CN", "zh-CN"),
    ("*;q=0.1, ,;;=,zh-CN;q=abc, en;q=0", "zh-CN", "zh-CN"),  # nonsense is skipped, q=0 means not
    ("x" * 5000, "en", "en"),
])
def test_the_language_a_browser_asks_for(header, default, expected):
    assert negotiate(header, default) == expected


def test_language_tags_people_write():
    assert supported("zh_CN") == supported("ZH-cn") == supported("cmn") == "zh-CN"
    assert supported("en-GB") == "en" and supported("ja") is None and supported("") is None


# --------------------------------------------------------------------------- numbers in words


def test_durations_times_and_sizes_in_each_language():
    assert formats.duration(3725, "en") == "1h 2m" and formats.duration(3725, "zh-CN") == "1小时2分钟"
    assert formats.duration(47, "zh-CN") == "47秒" and formats.duration(0, "en") == "0s"
    assert formats.duration(86400 + 5, "en") == "1d"  # the two largest units: a day and no hours
    now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    assert formats.age(now - timedelta(minutes=3), "zh-CN", now) == "3分钟前"
    assert formats.age(now - timedelta(minutes=3), "en", now) == "3 minutes ago"
    assert formats.size(1536, "zh-CN") == "1.5 KB" and formats.size(3 * 1024 ** 3, "en") == "3.0 GB"
    assert formats.size(512, "en") == "512 B"


# --------------------------------------------------------------------------- chat messages


def _done_doc() -> dict:
    return {"job": "产品介绍", "state": "done", "outputs": [
        {"name": "产品介绍.mp4", "state": "done", "url": "https://s3.example.com/v.mp4?X-Amz-Signature=abc",
         "url_expires_at": "2026-12-13T10:00:00Z"}]}


def test_chat_messages_in_chinese_keep_names_links_and_codes():
    text = message_text(_done_doc(), "zh-CN")
    assert text == "视频已生成：产品介绍.mp4 https://s3.example.com/v.mp4?X-Amz-Signature=abc（链接有效期至 2026-12-13 10:00:00 UTC）"
    failed = {"job": "talk", "state": "failed", "error": {"code": "no_face", "message": "talk.jpg: no face found"}}
    assert message_text(failed, "zh-CN") == "视频生成失败：talk：talk.jpg: no face found"  # the record's detail as it is
    assert message_text(failed, "en") == "video failed: talk: talk.jpg: no face found"
    body = render_payload("json", failed, "zh-CN")
    assert body["error"]["code"] == "no_face" and body["state"] == "failed"  # what programs read never changes
    assert body["text"].startswith("视频生成失败")


def test_notify_language_is_checked_like_every_option(tmp_path):
    from daemon import config as config_mod
    from daemon.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        config_mod.from_dict({"notify": {"language": "klingon"}, "api": {"console_language": "fr"}}, base=tmp_path)
    assert "notify.language" in str(e.value) and "api.console_language" in str(e.value)


# --------------------------------------------------------------------------- the console's choice


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    root = tmp_path_factory.mktemp("i18n")
    share = Share(root / "share")
    cfg = share_config(root, share, None, api={"console_language": "zh-CN"})
    key = new_key(cfg, "reader")
    with ThreadApi(cfg) as api:
        yield api, key


def _lang(reply: httpx.Response) -> str:
    return re.search(r'<html lang="([^"]+)"', reply.text).group(1)


def test_the_console_speaks_what_the_browser_asks_for_then_the_configured_default(console):
    api, key = console
    zh = httpx.get(f"{api.url}/signin", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert _lang(zh) == "zh-CN" and zh.headers["content-language"] == "zh-CN" and "登录" in zh.text
    en = httpx.get(f"{api.url}/signin", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert _lang(en) == "en" and "Sign in" in en.text and not CJK.search(en.text.replace("简体中文", ""))
    other = httpx.get(f"{api.url}/signin", headers={"Accept-Language": "fr"})
    assert _lang(other) == "zh-CN"  # [api] console_language
    assert "accept-language" in zh.headers["vary"].lower()  # caches keep the languages apart


def test_the_switch_is_remembered_in_a_cookie_and_beats_the_browser(console):
    api, key = console
    with httpx.Client(base_url=api.url, headers={"Accept-Language": "zh-CN"}) as browser:
        reply = browser.post("/language", data={"lang": "en", "next": "/templates"})
        assert reply.status_code == 303 and reply.headers["location"] == "/templates"
        cookie = reply.headers["set-cookie"]
        assert "lipsyncd_lang=en" in cookie and "max-age" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert _lang(browser.get("/", headers=auth(key))) == "en"
        browser.post("/language", data={"lang": "zh-CN", "next": "/"})
        assert _lang(browser.get("/", headers=auth(key))) == "zh-CN"


@pytest.mark.parametrize("target", ["//evil.example.com/", "https://evil.example.com/", "/\\evil", "javascript:x"])
def test_the_switch_never_sends_anyone_elsewhere(console, target):
    api, _key = console
    reply = httpx.post(f"{api.url}/language", data={"lang": "zh-CN", "next": target})
    assert reply.status_code == 303 and reply.headers["location"] == "/"


def test_the_switch_ignores_languages_we_do_not_speak_and_refuses_big_bodies(console):
    api, _key = console
    reply = httpx.post(f"{api.url}/language", data={"lang": "tlh", "next": "/"})
    assert reply.status_code == 303 and "set-cookie" not in reply.headers
    big = httpx.post(f"{api.url}/language", content=b"lang=" + b"x" * 100_000,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"


# --------------------------------------------------------------------------- the manual


def test_the_chinese_manual_repeats_the_english_commands_and_code_exactly():
    english = (REPO / "README.md").read_text()
    chinese = (REPO / "README.zh-CN.md").read_text()
    assert "README.zh-CN.md" in "\n".join(english.splitlines()[:5])  # linked from the first lines
    en_sections, zh_sections = sections(english), translated_sections(chinese)
    wanted = {"Quick start", "Dropping jobs", "Results: the sidecar", "Submitting over HTTP", "Web console",
              "Production deployment", "lipsyncd in front of HeyGem / Duix.Avatar"}
    assert wanted <= set(zh_sections), wanted - set(zh_sections)
    assert set(zh_sections) <= set(en_sections), "a translated section names an English one that is gone"
    command = re.compile(r"`((?:lipsyncd|\./scripts/|scripts/|curl|podman|docker|kubectl|systemctl|sudo)\s[^`]*)`")
    commands = lambda text: {re.sub(r"\s+", " ", c) for c in command.findall(text)}  # noqa: E731
    for title, body in zh_sections.items():
        assert code_blocks(body) == code_blocks(en_sections[title]), f"the code of '{title}' differs"
        extra = commands(body) - commands(english)
        assert not extra, f"'{title}' has commands the English README does not: {extra}"
        assert CJK.search(body), title
    for tag in LANGUAGES:  # the README says which languages there are
        assert tag in english
