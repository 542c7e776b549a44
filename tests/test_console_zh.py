"""The web console in Simplified Chinese, in a real browser (headless chromium) against a
real API process, daemon and store: a browser that asks for zh-CN reads no English word
but names and codes, at desktop and phone width, drawn with a real CJK font (not boxes),
and the language switch goes to English and back.

Names and record data (job and file names, hosts, the error details of a record) are
marked ``translate="no"`` in the pages and stay as they are; so do `code` spans.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from contextlib import contextmanager

import pytest

from daemon.joboptions import OPTIONS
from lipsync.engines import NAMES as ENGINE_NAMES
from tests.api_harness import make_stack
from tests.browser import accessibility_problems, needs_browser, page_width, screenshot, sign_in, start, wait
from tests.daemon_harness import REPO, Media
from tests.media_factory import write_face_video

pytestmark = [needs_browser, pytest.mark.xdist_group("console")]
DOCS_IMG = REPO / "docs" / "img"
SHOWN = {("jobs", 1280), ("job-failed", 390)}  # the screenshots README.zh-CN.md shows
CHINESE = "zh-CN,zh;q=0.9,en;q=0.5"
CJK = re.compile(r"[\u4e00-\u9fff]")
# words that are names or codes in any language: the product and its parts, protocols,
# units and file types, the voices' codes, values typed as they are
ALLOWED = {"lipsyncd", "HeyGem", "API", "URL", "JSON", "HTTP", "GPU", "UTC", "MB", "KB", "GB", "fps",
           "espeak", "ng", "en", "de", "cmn", "keep", "mp4", "mov", "mkv", "webm", "png", "jpg", "jpeg",
           "wav", "mp3", "m4a", "flac", "ogg", "aac", "srt", "vtt", *ENGINE_NAMES}

# every text a person meets on the page: visible text, the accessible names and hints in
# attributes, option labels, the title -- except what is marked as not to be translated
TEXTS_JS = r"""
const keep = el => !el.closest('code, script, style, [translate="no"], [lang]:not([lang="zh-CN"])');
const out = [document.title];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (n.textContent.trim() && keep(el) && (el.tagName === 'OPTION' || el.checkVisibility())) out.push(n.textContent);
}
for (const el of document.querySelectorAll('[aria-label], [alt], [placeholder], [title], [data-label]')) {
  if (!keep(el)) continue;
  for (const a of ['aria-label', 'alt', 'placeholder', 'title', 'data-label']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
}
return out;
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store):
    folder = tmp_path_factory.mktemp("console-zh-media")
    media = Media(folder, seconds=2.0)
    media.template = write_face_video(folder / "presenter.mp4", seconds=2.0, size=(320, 240))
    with make_stack(tmp_path_factory.mktemp("console-zh"), store, media) as s:
        # a job that fails as people's jobs do: text to speak in a voice the server lacks
        with open(media.template, "rb") as t:
            failed = s.submit(files=[("template", ("presenter.mp4", t, "video/mp4"))],
                              data={"name": "欢迎词", "text": "大家好", "voice": "xx-nosuchvoice"}).json()["name"]
        assert s.share.wait_for([failed], daemons=[s.daemon])[failed]["error"]["code"] == "bad_voice"
        done = s.upload_job("产品介绍").json()["name"]
        s.share.wait_for([done], daemons=[s.daemon])
        library = s.daemon.config.parent / "library"
        if library.is_dir():
            shutil.copy(media.template, library / "主播.mp4")
        s.names = (failed, done)
        yield s


# the New job form's examples that are values as typed (a URL, a file name); the example
# text to speak is words, and is translated
EXAMPLES = [str(o.example) for o in OPTIONS if o.key != "text" and not isinstance(o.example, dict)]


def english_words(driver, stack) -> list[str]:
    texts = driver.execute_script(TEXTS_JS)
    words = []
    for text in texts:
        # names stay as they are, also inside a sentence ("anna.mp4 的第一帧")
        library = [p.name for p in (stack.daemon.config.parent / "library").iterdir()]
        for value in (stack.daemon.host, *library, *EXAMPLES):
            text = text.replace(value, "")
        words += [w for w in re.findall(r"[A-Za-z][A-Za-z0-9]+", text) if w not in ALLOWED]
    return words


@contextmanager
def chinese_browser(stack, width: int = 1280):
    """A browser asking for Chinese, signed in."""
    driver = start(width=width, height=900, language=CHINESE)
    try:
        sign_in(driver, stack)
        yield driver
    finally:
        driver.quit()


def settle(driver) -> None:
    """Wait for the health strip's first fill, and open the folded parts of the page."""
    wait(driver, lambda d: "正在检查服务" not in d.find_element("id", "health").text, 20, "the health strip")
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")


@pytest.mark.parametrize("width", [1280, 390])
def test_a_chinese_reader_meets_no_english_at_desktop_and_phone_width(stack, width, tmp_path):
    failed, done = stack.names
    driver = start(width=width, height=900, language=CHINESE)
    try:
        driver.get(f"{stack.url}/signin")
        assert driver.execute_script("return document.documentElement.lang") == "zh-CN"
        assert english_words(driver, stack) == [], "the sign-in page"
        assert "登录" in driver.find_element("tag name", "h1").text
        sign_in(driver, stack)
        assert page_width(driver) == width
        for path in ("/", f"/jobs/{failed}", f"/jobs/{done}", "/new", "/templates"):
            driver.get(stack.url + path)
            settle(driver)
            assert driver.execute_script("return document.documentElement.lang") == "zh-CN", path
            assert english_words(driver, stack) == [], (width, path)
            assert accessibility_problems(driver) == [], (width, path)  # labels, contrast, no sideways scrolling
            page_name = "jobs" if path == "/" else "job-failed" if path.endswith(failed) else \
                "job-done" if path.endswith(done) else path.strip("/")
            shot = screenshot(driver, tmp_path, f"console-zh-{page_name}-{width}")
            if os.environ.get("LIPSYNCD_UPDATE_SCREENSHOTS") == "1" and (page_name, width) in SHOWN:
                (DOCS_IMG / shot.name).write_bytes(shot.read_bytes())  # what README.zh-CN.md shows
        # what a failed job's reader needs, in Chinese: the state, why, what to do
        driver.get(f"{stack.url}/jobs/{failed}")
        page = driver.find_element("tag name", "main").text
        assert "失败" in page and "失败原因" in page and "怎么办" in page and "重试" in page
        driver.get(f"{stack.url}/jobs/{done}")
        page = driver.find_element("tag name", "main").text
        assert "已完成" in page and "复制链接" in page and "下载" in page
    finally:
        driver.quit()


def test_chinese_is_drawn_with_a_cjk_font_not_boxes(stack):
    with chinese_browser(stack) as driver:
        settle(driver)
        # the font chromium really drew the heading with (DevTools), and how much of it
        driver.execute_cdp_cmd("DOM.enable", {})
        driver.execute_cdp_cmd("CSS.enable", {})
        root = driver.execute_cdp_cmd("DOM.getDocument", {})["root"]["nodeId"]
        h1 = driver.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": "h1"})["nodeId"]
        fonts = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": h1})["fonts"]
        heading = driver.find_element("tag name", "h1").text
        assert CJK.search(heading), heading
        cjk_fonts = [f for f in fonts if re.search(r"CJK|Han Sans|Hei|YaHei|PingFang|Noto Sans SC", f["familyName"])]
        print("fonts of the heading:", fonts)
        assert cjk_fonts, fonts
        assert sum(f["glyphCount"] for f in cjk_fonts) >= len(CJK.findall(heading)), fonts
        # a real font gives each character its own shape, a full em wide; missing glyphs are
        # all the same box: compare the ink of a one-stroke and a many-stroke character
        measured = driver.execute_script(r"""
          const font = getComputedStyle(document.body).fontFamily;
          const c = document.createElement('canvas'); c.width = 200; c.height = 100;
          const g = c.getContext('2d', {willReadFrequently: true});
          const ink = ch => { g.clearRect(0, 0, 200, 100); g.font = `64px ${font}`; g.fillStyle = '#000';
            g.fillText(ch, 10, 80); const d = g.getImageData(0, 0, 200, 100).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 128) n++; return n; };
          g.font = `64px ${font}`;
          return {one: ink('一'), dragon: ink('龍'), width: g.measureText('任务状态').width};
        """)
        print("ink and width:", measured)
        assert measured["dragon"] > 3 * measured["one"] > 0, measured
        assert abs(measured["width"] - 4 * 64) < 0.1 * 4 * 64, measured  # four full-width characters


def test_the_language_switch_goes_to_english_and_back_and_is_remembered(stack):
    from selenium.webdriver.common.by import By

    with chinese_browser(stack) as driver:
        driver.get(f"{stack.url}/templates")
        assert driver.find_element(By.TAG_NAME, "h1").text == "模板"
        driver.find_element(By.CSS_SELECTOR, 'button[name="lang"][value="en"]').click()
        wait(driver, lambda d: d.execute_script("return document.documentElement.lang") == "en", 10, "English")
        assert driver.current_url.endswith("/templates")  # back on the same page
        assert driver.find_element(By.TAG_NAME, "h1").text == "Templates"
        assert driver.get_cookie("lipsyncd_lang")["value"] == "en"
        driver.get(f"{stack.url}/")  # the browser still asks for Chinese: the choice wins
        assert driver.find_element(By.TAG_NAME, "h1").text == "Jobs"
        nav = driver.find_element(By.CSS_SELECTOR, "nav[aria-label]").text
        assert "New job" in nav and not CJK.search(nav)
        driver.find_element(By.CSS_SELECTOR, 'button[name="lang"][value="zh-CN"]').click()
        wait(driver, lambda d: d.execute_script("return document.documentElement.lang") == "zh-CN", 10, "Chinese")
        assert driver.find_element(By.TAG_NAME, "h1").text == "任务"
        # the live texts follow the language too: a state changed by the script reads in Chinese
        time.sleep(0.2)
        assert driver.execute_script("return MESSAGES.states.done") == "已完成"
