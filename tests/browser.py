"""A real browser for the web console tests: Debian's chromium, headless, through Selenium
and the system chromedriver (no driver is downloaded), plus in-page checks of what a
person would notice -- labels, contrast, keyboard order, overflow at phone width."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs chromium and chromedriver (scripts/setup --dev installs them with apt where it can)")


MIN_WINDOW = 500  # headless chromium widens any window narrower than this


def start(width: int = 1280, height: int = 900, language: str | None = None):
    """A browser whose page is ``width`` CSS pixels wide. Below MIN_WINDOW the window cannot
    be that narrow, so the viewport of a phone is emulated (DevTools device metrics)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={max(width, MIN_WINDOW)},{height}", "--autoplay-policy=no-user-gesture-required",
                "--mute-audio", "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if language:  # what the browser asks pages for (Accept-Language), and navigator.language
        agent = driver.execute_script("return navigator.userAgent")
        driver.execute_cdp_cmd("Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": language})
    if width < MIN_WINDOW:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    return driver


def page_width(driver) -> int:
    """The page's layout width in CSS pixels, as its scripts see it."""
    return int(driver.execute_script("return window.innerWidth"))


# In-page checks. Contrast follows WCAG 2.x: relative luminance of the text colour against
# the first opaque background behind it; 4.5:1 for body text, 3:1 for large text.
ACCESSIBILITY_JS = r"""
const problems = [];
const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
  return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none"; };
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden" || !visible(el)) continue;
  const named = (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
  if (!named) problems.push(`no label: ${el.outerHTML.slice(0, 80)}`);
}
for (const el of document.querySelectorAll("button, a")) {
  if (visible(el) && !(el.textContent.trim() || el.getAttribute("aria-label")))
    problems.push(`no accessible name: ${el.outerHTML.slice(0, 80)}`);
}
for (const img of document.querySelectorAll("img")) if (!img.hasAttribute("alt")) problems.push(`img without alt: ${img.src}`);
for (const p of document.querySelectorAll("progress")) if (!p.getAttribute("aria-label")) problems.push("progress without label");
const rgb = s => (s.match(/[\d.]+/g) || [0, 0, 0, 0]).map(Number);
const lum = ([r, g, b]) => { const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
const background = el => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
  if (c.length < 4 ? true : c[3] > 0.9) { if (getComputedStyle(e).backgroundColor !== "rgba(0, 0, 0, 0)") return c; } }
  return [255, 255, 255]; };
for (const el of document.querySelectorAll("body *")) {
  if (!visible(el) || el.closest("video")) continue;
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own) continue;
  const s = getComputedStyle(el);
  const fg = rgb(s.color), bg = background(el);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)}: "${el.textContent.trim().slice(0, 40)}"`);
}
if (document.documentElement.scrollWidth > window.innerWidth + 1)
  problems.push(`horizontal scrolling: page ${document.documentElement.scrollWidth}px wide in ${window.innerWidth}px`);
return problems;
"""


def accessibility_problems(driver) -> list[str]:
    return driver.execute_script(ACCESSIBILITY_JS)


def tab_order(driver, presses: int = 40) -> list[str]:
    """The ids (or tag names) focus visits when pressing Tab from the top of the page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    seen = []
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        seen.append(driver.execute_script(
            "const e = document.activeElement; return e.id || (e.tagName.toLowerCase() + ':' + (e.textContent || '').trim())"))
    return seen


def screenshot(driver, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait(driver, condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception:  # noqa: BLE001 - the page may be between states
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} on {driver.current_url}")


def sign_in(driver, stack) -> None:
    """Sign in with the stack's key from the jobs page (which first sends the browser away)."""
    from selenium.webdriver.common.by import By

    driver.get(f"{stack.url}/")
    assert "/signin" in driver.current_url  # nothing is shown before signing in
    driver.find_element(By.ID, "key").send_keys(stack.key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: d.current_url.rstrip("/") == stack.url, 10, "the jobs page")
