"""Headless Chromium for tests that open static HTML pages from disk.

Uses selenium with Debian's ``chromium`` and ``chromium-driver`` packages. The
driver path is passed explicitly through ``Service`` so selenium-manager never
runs (it would try to download a driver, and test machines have no internet).
Console messages come from Chromium's own log (``goog:loggingPrefs``), which
records uncaught exceptions, ``console.error`` calls, CSP violations and failed
resource loads at level SEVERE, including ones raised while the page loads.

When Chromium is missing, the helper SKIPS the test with the install command as
the reason on a developer machine, but FAILS it when the environment variable
``CI`` is set (a non-empty value other than "0"/"false"): a browser check that
silently skips in CI proves nothing.

Usage in a test module::

    from browser import chromium  # noqa: F401  (pytest fixture)

    def test_page(chromium, tmp_path):
        page = chromium.open(path_to_html)
        assert page.console_errors() == []
        chromium.click("button.sort")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

APT_PACKAGES = ("chromium", "chromium-driver")
INSTALL_HINT = f"install them with: apt-get update && apt-get install -y {' '.join(APT_PACKAGES)}"
_BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_DRIVER_CANDIDATES = ("chromedriver",)
_SEVERE = "SEVERE"


def find_chromium() -> tuple[str, str]:
    """Paths of Chromium and chromedriver; ``pytest.fail`` naming the apt packages when absent."""
    browser = os.environ.get("IQABENCH_CHROMIUM") or next(
        (found for name in _BROWSER_CANDIDATES if (found := shutil.which(name))), None
    )
    driver = os.environ.get("IQABENCH_CHROMEDRIVER") or next(
        (found for name in _DRIVER_CANDIDATES if (found := shutil.which(name))), None
    )
    missing = [label for label, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        _absent(f"headless browser test needs {' and '.join(missing)}, not found on PATH; {INSTALL_HINT}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _absent("headless browser test needs the selenium Python package; install it with: pip install selenium")
    return browser, driver


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _absent(reason: str) -> None:
    """Fail in CI (where the browser is part of the contract), skip with the reason elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (required because CI is set)")
    pytest.skip(reason)


@dataclass
class Page:
    """A page opened in the shared browser; ``console_errors`` drains the log collected since it opened."""

    browser: Browser
    path: Path

    def console_entries(self) -> list[dict]:
        return self.browser.driver.get_log("browser")

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.console_entries() if entry.get("level") == _SEVERE]


class Browser:
    """One headless Chromium session (starting it costs about a second; share it per module)."""

    def __init__(self) -> None:
        binary, driver_path = find_chromium()  # fails with the install command before selenium is imported
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By

        self._by = By
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--no-first-run",
            "--window-size=1280,900",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            self.driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        except Exception as err:  # selenium raises several types; all mean the same thing here
            pytest.fail(f"could not start headless Chromium ({binary}, {driver_path}): {err}; {INSTALL_HINT}")
        self.driver.set_page_load_timeout(30)

    def open(self, path: str | os.PathLike[str]) -> Page:
        """Load a local HTML file; console messages of earlier pages are discarded first."""
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no HTML file at {path}")
        self.driver.get_log("browser")  # drain what earlier pages left
        self.driver.get(path.as_uri())
        return Page(self, path)

    def find(self, css: str):
        """The first element matching a CSS selector (selenium WebElement); fails the test if none."""
        return self.driver.find_element(self._by.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        return self.driver.find_elements(self._by.CSS_SELECTOR, css)

    def find_xpath(self, xpath: str):
        return self.driver.find_element(self._by.XPATH, xpath)

    def click(self, css: str) -> None:
        """Click the first element matching ``css`` as a user would (it must be visible and enabled)."""
        self.find(css).click()

    def run_js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def set_width(self, width: int, height: int = 900) -> None:
        """Resize the window so the *viewport* (not the outer window) is ``width`` CSS pixels wide."""
        self.driver.set_window_size(width, height)
        inner = self.run_js("return window.innerWidth;")
        if inner != width:
            self.driver.set_window_size(width + (width - inner), height)

    def overflowing(self) -> list[str]:
        """Elements that stick out of the viewport horizontally, unless a scroll box (overflow-x auto/scroll/
        hidden) that itself fits holds them; plus the page itself when it scrolls sideways."""
        return self.run_js(_OVERFLOW_JS)

    def screenshot(self, path: str | os.PathLike[str], width: int = 1280) -> None:
        """Full-page PNG at ``width`` px (the window is stretched to the page height)."""
        self.set_width(width)
        height = self.run_js("return Math.ceil(document.documentElement.scrollHeight);")
        self.set_width(width, min(int(height) + 120, 16000))
        self.driver.save_screenshot(str(path))
        self.set_width(width)

    def close(self) -> None:
        self.driver.quit()


_OVERFLOW_JS = """
var limit = document.documentElement.clientWidth + 1, out = [];
if (document.documentElement.scrollWidth > limit) {
  out.push("page scrolls sideways: " + document.documentElement.scrollWidth + " > " + (limit - 1));
}
document.querySelectorAll("body *").forEach(function (el) {
  var rect = el.getBoundingClientRect();
  if (rect.width === 0 || (rect.right <= limit && rect.left >= -1)) { return; }
  for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
    var ox = getComputedStyle(p).overflowX;
    if ((ox === "auto" || ox === "scroll" || ox === "hidden") && p.getBoundingClientRect().right <= limit) { return; }
    if (p.tagName === "DETAILS" && !p.open) { return; }
  }
  out.push(el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined ? "." + el.className : "")
           + " right=" + Math.round(rect.right));
});
return out;
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()
