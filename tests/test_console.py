"""The web console in a real browser (headless chromium through Selenium) against a real
API process, daemon and store: sign in, drop a job through the form, watch it fail and
explain why, retry it, watch the progress reach done without a reload, play the video,
copy its link; the template library; every page at desktop and phone width, checked for
labels, contrast, keyboard order and overflow.

Screenshots of every page go to the test's tmp folder; with LIPSYNCD_UPDATE_SCREENSHOTS=1
they also replace the ones in docs/img/ that the README shows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.api_harness import ThreadApi, auth, make_stack, share_config
from tests.browser import (accessibility_problems, needs_browser, page_width, screenshot, sign_in, start,
                           tab_order, wait)
from tests.daemon_harness import REPO, Media, Share
from tests.media_factory import write_face_video

pytestmark = [needs_browser, pytest.mark.xdist_group("console")]
DOCS_IMG = REPO / "docs" / "img"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, store):
    folder = tmp_path_factory.mktemp("console-media")
    media = Media(folder, seconds=3.0)
    # a real face (the astronaut photo, moving a little): what the screenshots show
    media.template = write_face_video(folder / "presenter.mp4", seconds=3.0, size=(320, 240))
    # the first render fails (to show a failed job and its retry); renders are slowed so
    # that the progress bar is seen moving
    with make_stack(tmp_path_factory.mktemp("console"), store, media,
                    failpoints="before_render=raise*1,render_progress=sleep:0.15",
                    render={"chunk_frames": 4}) as s:
        # the daemon's first render fails (raise*1): spend it here, on a job the tests then
        # explain and retry, so that the order the tests run in does not matter
        name = s.upload_job("broken job").json()["name"]
        s.share.wait_for([name], daemons=[s.daemon])
        yield s


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> list[Path]:
    taken: list[Path] = []
    yield taken
    if os.environ.get("LIPSYNCD_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for path in taken:
            (DOCS_IMG / f"console-{path.name}").write_bytes(path.read_bytes())


@pytest.fixture(scope="module")
def browser(stack, tmp_path_factory):
    driver = start()
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": stack.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    try:
        yield driver
    finally:
        driver.quit()


def test_a_job_from_the_form_to_a_playing_video(stack, browser, tmp_path_factory, shots):
    from selenium.webdriver.common.by import By

    folder = tmp_path_factory.mktemp("screens")
    driver = browser
    driver.get(f"{stack.url}/signin")
    shots.append(screenshot(driver, folder, "signin"))
    assert accessibility_problems(driver) == []
    sign_in(driver, stack)
    # a wrong cookie-less write is refused: the session alone cannot change anything
    assert httpx.post(f"{stack.url}/api/v1/jobs", cookies={"lipsyncd_session": "x"}).status_code == 401

    # a failed job says why and what to do; Retry drops it into the inbox again
    driver.get(f"{stack.url}/jobs/broken%20job")
    why = driver.find_element(By.ID, "why").find_element(By.XPATH, "..")
    assert "internal_error" in why.text and "What to do:" in why.text
    shots.append(screenshot(driver, folder, "job-failed"))
    driver.find_element(By.CSS_SELECTOR, "[data-action=retry]").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#job [data-field=state]").text != "failed", 15,
         "the retried job to leave failed")
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#job [data-field=state]").text == "done", 90,
         "the retried job to be done")

    # a new job through the form: the page follows it to done without reloading
    driver.get(f"{stack.url}/new")
    driver.find_element(By.ID, "audio").send_keys(str(stack.media.audio))
    driver.find_element(By.ID, "template").send_keys(str(stack.media.template))
    driver.find_element(By.ID, "name").send_keys("from the console")
    shots.append(screenshot(driver, folder, "new-job"))
    driver.find_element(By.CSS_SELECTOR, "#new-job button[type=submit]").click()
    wait(driver, lambda d: "/jobs/from%20the%20console" in d.current_url, 30, "the job page")
    driver.execute_script("window.__sameDocument = true")
    progress_seen = set()

    def finished(d):
        bar = d.find_element(By.CSS_SELECTOR, "#job [data-field=progress]")
        progress_seen.add(round(float(bar.get_attribute("value")), 2))
        return d.find_element(By.CSS_SELECTOR, "#job [data-field=state]").text == "done"

    wait(driver, finished, 90, "the job to be done")
    assert driver.execute_script("return window.__sameDocument") is True  # no reload on the way
    assert not driver.find_element(By.CSS_SELECTOR, "[data-action=cancel]").is_displayed()  # nothing to cancel
    assert driver.find_element(By.CSS_SELECTOR, "[data-action=delete]").is_displayed()
    final = float(driver.find_element(By.CSS_SELECTOR, "#job [data-field=progress]").get_attribute("value"))
    assert final == 1.0 and len(progress_seen) >= 3, progress_seen  # it moved on the way, then filled

    # the outputs arrived in place: the video plays from the permanent link
    video = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "video[data-output]"), 20, "the player")
    link = driver.find_element(By.ID, "link-0").get_attribute("value")
    assert link.startswith(f"{stack.url}/l/") and video.get_attribute("src") == link
    driver.execute_script("arguments[0].preload = 'auto'; arguments[0].load(); arguments[0].play()", video)
    wait(driver, lambda d: d.execute_script("return arguments[0].readyState", video) >= 2, 30,
         "the video to have data")
    poster = driver.execute_script("return arguments[0].poster", video)
    assert httpx.get(poster, cookies={c["name"]: c["value"] for c in driver.get_cookies()}).headers[
        "content-type"] == "image/jpeg"

    driver.find_element(By.CSS_SELECTOR, "[data-copy=link-0]").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "[data-copy=link-0]").text == "Copied", 5, "Copied")
    copied = driver.execute_async_script("navigator.clipboard.readText().then(arguments[0], e => arguments[0]('!' + e))")
    assert copied == link
    driver.execute_script("window.scrollTo(0, 0)")
    shots.append(screenshot(driver, folder, "job-done"))

    driver.get(f"{stack.url}/")
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-job="from the console"]')
    assert "done" in row.text and "h1" in row.text
    wait(driver, lambda d: "store: reachable" in d.find_element(By.ID, "health").text, 15, "the health strip")
    assert "h1 (passthrough)" in driver.find_element(By.ID, "health").text
    shots.append(screenshot(driver, folder, "jobs"))


def test_text_and_a_square_shape_from_the_form(stack, browser):
    """Text instead of audio, a 1:1 shape: the form's optional section through to a done job."""
    import shutil

    from selenium.webdriver.common.by import By

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it with apt)")
    driver = browser
    if "/signin" in (driver.get(f"{stack.url}/") or driver.current_url):  # the module's browser may be signed in
        sign_in(driver, stack)
    driver.get(f"{stack.url}/new")
    driver.find_element(By.CSS_SELECTOR, "#new-job details summary").click()
    driver.find_element(By.ID, "text").send_keys("Hello from the web console.")
    driver.find_element(By.CSS_SELECTOR, "#aspect option[value='1:1']").click()
    driver.find_element(By.ID, "template").send_keys(str(stack.media.template))
    driver.find_element(By.ID, "name").send_keys("spoken square")
    assert accessibility_problems(driver) == []
    driver.find_element(By.CSS_SELECTOR, "#new-job button[type=submit]").click()
    wait(driver, lambda d: "/jobs/spoken%20square" in d.current_url, 30, "the job page")
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#job [data-field=state]").text == "done", 90,
         "the job to be done")
    doc = httpx.get(f"{stack.url}/api/v1/jobs/spoken%20square", headers=auth(stack.key)).json()
    assert doc["options"]["text"] == "Hello from the web console." and doc["options"]["aspect"] == "1:1"
    out = doc["outputs"][0]
    assert out["width"] == out["height"] and out["duration"] > 1.0


def test_the_job_list_updates_live(stack, browser):
    from selenium.webdriver.common.by import By

    driver = browser
    if "/signin" in (driver.get(f"{stack.url}/") or driver.current_url):
        sign_in(driver, stack)
    name = stack.upload_job("live row").json()["name"]
    driver.get(f"{stack.url}/")
    driver.execute_script("window.__sameDocument = true")
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-job="{name}"] [data-field=state]').text
         == "done", 90, "the row to reach done")
    assert driver.execute_script("return window.__sameDocument") is True
    bar = driver.find_element(By.CSS_SELECTOR, f'tr[data-job="{name}"] progress')
    assert float(bar.get_attribute("value")) == 1.0


def test_the_template_library_page(stack, browser, tmp_path, tmp_path_factory, shots):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{stack.url}/templates")
    if "/signin" in driver.current_url:
        sign_in(driver, stack)
        driver.get(f"{stack.url}/templates")
    upload = tmp_path / "ben.mp4"
    upload.write_bytes(stack.media.template.read_bytes())
    driver.find_element(By.ID, "tpl-file").send_keys(str(upload))
    driver.find_element(By.CSS_SELECTOR, "#add-template button[type=submit]").click()
    tile = wait(driver, lambda d: d.find_element(By.XPATH, "//li[contains(., 'ben.mp4')]"), 20, "the new tile")
    img = tile.find_element(By.TAG_NAME, "img")
    wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0,
         20, "the thumbnail")
    shots.append(screenshot(driver, tmp_path_factory.mktemp("screens"), "templates"))
    tile.find_element(By.CSS_SELECTOR, "[data-delete-template]").click()
    driver.switch_to.alert.accept()
    wait(driver, lambda d: "ben.mp4" not in d.find_element(By.TAG_NAME, "main").text, 10, "the tile to go")
    assert not (stack.daemon.config.parent / "library" / "ben.mp4").exists()


@pytest.mark.parametrize("width", [1280, 390])
def test_every_page_is_usable_at_desktop_and_phone_width(stack, width, tmp_path_factory, shots):
    from selenium.webdriver.common.by import By

    driver = start(width=width, height=900)
    folder = tmp_path_factory.mktemp(f"screens-{width}")
    try:
        sign_in(driver, stack)
        assert page_width(driver) == width  # really this narrow: a phone, not a 500 px window
        # one long word as the name: it must wrap, not push the page sideways
        name = stack.upload_job(f"team_update_2026_q3_final_cut_{width}").json()["name"]
        stack.share.wait_for([name], daemons=[stack.daemon])
        for path in ("/", "/new", "/templates", f"/jobs/{name}"):
            driver.get(stack.url + path)
            time.sleep(0.5)  # the health strip fills in
            assert accessibility_problems(driver) == [], (width, path)
            shot = screenshot(driver, folder, f"{path.strip('/').split('/')[0] or 'jobs'}-{width}")
            if width == 390:
                shots.append(shot)
        driver.get(f"{stack.url}/new")
        order = tab_order(driver)
        first_visits = list(dict.fromkeys(order))  # focus cycles through the page: the first round
        form = [i for i in first_visits if i in ("audio", "template", "name", "engine", "link_lifetime")]
        assert form == ["audio", "template", "name", "engine", "link_lifetime"], order
        assert "button:Start" in order[order.index("link_lifetime"):], order
        driver.find_element(By.ID, "name")  # reachable by keyboard and present
    finally:
        driver.quit()


def test_read_only_without_a_key_on_a_trusted_lan(tmp_path, media):
    share = Share(tmp_path / "share")
    cfg = share_config(tmp_path, share, None, api={"console_read_only_without_key": True})
    with ThreadApi(cfg) as api:
        page = httpx.get(f"{api.url}/")
        assert page.status_code == 200 and "(read-only)" in page.text and 'href="/new"' not in page.text
        assert httpx.get(f"{api.url}/api/v1/jobs").status_code == 200
        with open(media.audio, "rb") as a:
            refused = httpx.post(f"{api.url}/api/v1/jobs", files=[("audio", ("a.wav", a))])
        assert refused.status_code == 401  # changing anything still takes a key
    (tmp_path / "strict").mkdir()
    strict = share_config(tmp_path / "strict", Share(tmp_path / "strict" / "share"), None)
    with ThreadApi(strict) as api:
        assert httpx.get(f"{api.url}/", follow_redirects=False).status_code == 303  # to /signin


def test_a_read_only_session_following_a_job_to_done_gets_no_buttons_to_change_it(stack):
    from selenium.webdriver.common.by import By

    from daemon.api.auth import KeyRing

    reader = KeyRing(stack.api.cfg.api_keys_file).create("console-reader", scope="read")
    driver = start()
    try:
        driver.get(f"{stack.url}/signin")
        driver.find_element(By.ID, "key").send_keys(reader)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(driver, lambda d: d.current_url.rstrip("/") == stack.url, 10, "the jobs page")
        name = stack.upload_job("followed by a reader").json()["name"]
        driver.get(f"{stack.url}/jobs/{name.replace(' ', '%20')}")
        wait(driver, lambda d: d.find_element(By.ID, "job").get_attribute("data-state") == "done", 120,
             "the job page to show done, live")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#outputs video"), 10, "the outputs swapped in")
        buttons = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#job button") if b.is_displayed()]
        assert buttons == [], buttons  # no Delete videos, no Retry, no Cancel for a read-only key
        # the health strip follows the service: within its refresh, nothing is said to be rendering
        wait(driver, lambda d: name not in d.find_element(By.ID, "health").text, 15,
             "the health strip to stop saying the job renders")
        driver.get(f"{stack.url}/new")
        assert driver.current_url.rstrip("/") == stack.url  # no New job page for a read-only key
    finally:
        driver.quit()
